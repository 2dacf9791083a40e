"""Operator at scale against the test Kubernetes API (tests/operator/k8s_emulator.py).

Starts the emulator + a fake StatefulSet controller/kubelet in this process and the real operator as a
subprocess (`supernode operator --server URL`), applies N ModelDeployments (2-pod Ascend groups, one per
SuperPoD), and prints: apply → all children created (median, p99) and where that time went, API requests
per ModelDeployment for the initial reconcile and for a no-op resync, writes during the resync, the
operator's RSS.

Where the time goes, per ModelDeployment (apply → its 4th child exists):
- api: time the test API server spent answering that deployment's requests (the ADDED event's delivery
  to the operator's watch, each list/create/patch, timed inside the server);
- operator: the rest — the operator's own queueing, planning and request building, plus the wait
  before the server's event loop picks a request up (reported separately as the server's loop lag).
Both processes share the machine: their CPU seconds during the burst are printed too. The clock starts
once the operator has listed and indexed the cluster (watches open, its CPU quiet): start-up is not measured.

`--baseline REF` first runs the operator as of git commit REF (its component folders, extracted to a
temporary directory) against its own fresh emulator, then this tree's, and prints the two side by side
with ratios: the same machine load for both, which figures from different times would not have.

    python benchmarks/operator_scale.py --count 200
    python benchmarks/operator_scale.py --count 200 --baseline cc43b37   # before/after, one invocation
    python benchmarks/operator_scale.py --smoke        # a few seconds: 10 deployments (run by the tests)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "operator"), str(ROOT / "tests")]  # the emulator, fake cluster, builders

import aiohttp.web  # noqa: E402
import attrs  # noqa: E402
import httpx  # noqa: E402
import kmock  # noqa: E402
from builders import make_md  # noqa: E402
from fake_cluster import MD_KIND, FakeCluster, node  # noqa: E402
from k8s_emulator import K8sEmulator  # noqa: E402

from supernode.api import constants as C  # noqa: E402

UA = "operator-bench"
MD_NAME = re.compile(r"md-\d{4}")


def _owner(raw: aiohttp.web.BaseRequest, body: bytes) -> str | None:
    """The benchmark deployment a request is about (path, selector or body), if any."""
    found = MD_NAME.search(raw.path_qs) or MD_NAME.search(body[:4096].decode(errors="ignore"))
    return found.group(0) if found else None


@attrs.define(kw_only=True)
class TimedEmulator(K8sEmulator):
    """The emulator, timing each request it serves and each watch event it writes, per deployment."""

    busy: dict[str, list[tuple[float, float]]] = attrs.field(factory=lambda: defaultdict(list), init=False)
    added: dict[str, float] = attrs.field(factory=dict, init=False)  # MD name -> ADDED event emitted
    # Children created per deployment, and when its 4th (StatefulSet + 2 Services + PDB) was: timed as each is
    # created, so a deployment finished while the burst is still being applied is timed then.
    children: Counter[str] = attrs.field(factory=Counter, init=False)
    complete: dict[str, float] = attrs.field(factory=dict, init=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        start = time.monotonic()
        try:
            return await super().__call__(raw_request)
        finally:
            if raw_request.query.get("watch") not in ("true", "1") and raw_request.headers.get("User-Agent") != UA:
                who = _owner(raw_request, await raw_request.read())
                if who:
                    self.busy[who].append((start, time.monotonic()))

    def _emit(self, kind: Any, type_: str, obj: dict[str, Any]) -> None:
        super()._emit(kind, type_, obj)
        if kind.plural == C.PLURAL and type_ == "ADDED":
            self.added[obj["metadata"]["name"]] = time.monotonic()
        elif type_ == "ADDED" and kind.plural in CHILD_PLURALS and obj["metadata"].get("namespace") == "bench":
            owner = (obj["metadata"].get("labels") or {}).get(C.LABEL_DEPLOYMENT)
            if owner:
                self.children[owner] += 1
                if self.children[owner] == 4:
                    self.complete[owner] = time.monotonic()


def busy_within(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Length of the union of `spans` clipped to [start, end]."""
    total, cursor = 0.0, start
    for a, b in sorted(spans):
        a, b = max(a, cursor), min(b, end)
        if b > a:
            total += b - a
            cursor = b
    return total


def cpu_seconds(pid: int | str = "self") -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def operator_requests(emu: K8sEmulator, since: int) -> tuple[int, int, Counter[str]]:
    reqs = [r for r in list(emu._requests)[since:] if r.headers.get("User-Agent") != UA]
    writes = [r for r in reqs if r.method.value in ("POST", "PUT", "PATCH", "DELETE")]
    kinds = Counter(f"{r.method.value} {r.resource.plural if r.resource else r.url.path}"
                    f"{'/' + r.subresource if r.subresource else ''}" for r in writes)
    return len(reqs), len(writes), kinds


CHILD_PLURALS = frozenset({"statefulsets", "services", "poddisruptionbudgets"})  # 4 per deployment when complete


async def loop_lag(samples: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    """How late this process's event loop (the API server's) wakes a 10 ms sleeper."""
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(period)
        samples.append(max(0.0, time.monotonic() - t - period))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


COMPONENTS = ("crds", "kube", "httpserver", "operator", "engine", "router", "cli")


def baseline_tree(ref: str, into: Path) -> Path:
    """The operator's code at git `ref` (its component folders), extracted under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, *COMPONENTS], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


async def operator_ready(emu: K8sEmulator, pid: int, timeout: float = 120.0) -> None:
    """Until the operator watches nodes, pods and ModelDeployments (its initial lists are done) and its
    CPU goes quiet (the listings are indexed): start-up is not part of what is measured."""
    deadline = time.monotonic() + timeout
    watched: set[str] = set()
    while time.monotonic() < deadline and not {"nodes", "pods", C.PLURAL} <= watched:
        watched = {r.resource.plural for r in list(emu._requests)
                   if r.resource and r.params.get("watch") in ("true", "1") and r.headers.get("User-Agent") != UA}
        await asyncio.sleep(0.1)
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return
        last = now


@attrs.frozen
class Figures:
    """One run's results: latencies in seconds, per deployment."""

    count: int
    created: int
    total: float
    lat: list[float]
    api: list[float]
    own: list[float]
    pickup: list[float]
    lags: list[float]
    cpu_op: float
    cpu_api: float
    initial_reqs: int
    initial_writes: int
    initial_kinds: Counter[str]
    quiet_reqs: int
    quiet_writes: int
    resyncs: float
    rss: float
    skipped: float  # supernode_operator_reconcile_skipped_total at the end (nan: not exported)


async def metric(url: str, name: str) -> float:
    try:
        async with httpx.AsyncClient() as c:
            text = (await c.get(url, timeout=5)).text
    except httpx.HTTPError:
        return float("nan")
    found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(found) if found else float("nan")


async def run(count: int, resync: float, quiet: int, code: Path, profile: str | None = None) -> Figures:
    async with TimedEmulator(strict=False) as emu, kmock.Server(emu) as srv:
        url = str(srv.url).rstrip("/")
        emu.declare(MD_KIND)
        cluster = FakeCluster(emu)
        await cluster.add_nodes(*(node(f"sp{i}-n{j}", f"sp-{i}") for i in range(count) for j in range(2)))
        paths = [str(code / p) for p in COMPONENTS]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
        metrics_port = free_port()
        # --profile: cProfile inside the operator, on only during the burst (SIGUSR1 .. SIGUSR2).
        launch = [str(ROOT / "benchmarks" / "profiled_child.py"), profile] if profile else ["-m"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *launch, "supernode.cli", "operator", "-A", "--standalone", "--server", url,
            "--resync", str(resync), "--metrics-port", str(metrics_port), "--metrics-addr", "127.0.0.1",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        lags: list[float] = []
        stop_lag = asyncio.Event()
        try:
            await operator_ready(emu, proc.pid)
            async with cluster.running(period=0.2), httpx.AsyncClient(base_url=url, headers={"User-Agent": UA}) as c:
                start_req = emu.request_count
                applied: dict[str, float] = {}
                done: dict[str, float] = {}
                lag_task = asyncio.create_task(loop_lag(lags, stop_lag))
                if profile:
                    proc.send_signal(signal.SIGUSR1)
                cpu0 = (cpu_seconds(proc.pid), cpu_seconds())
                t0 = time.monotonic()
                for i in range(count):
                    md = (make_md(f"md-{i:04d}").namespace("bench").engine("vllm").accelerator("ascend-910c", 16)
                          .parallelism(tensor=32).placement(supernode="Required").replicas(1).dict())
                    r = await c.post(f"/apis/{C.GROUP}/{C.VERSION}/namespaces/bench/{C.PLURAL}", json=md)
                    r.raise_for_status()
                    applied[md["metadata"]["name"]] = time.monotonic()
                while len(emu.complete) < count and time.monotonic() - t0 < 300:
                    await asyncio.sleep(0.02)
                done.update({name: emu.complete[name] for name in applied if name in emu.complete})
                total = time.monotonic() - t0
                cpu_op, cpu_api = cpu_seconds(proc.pid) - cpu0[0], cpu_seconds() - cpu0[1]
                if profile:
                    proc.send_signal(signal.SIGUSR2)
                stop_lag.set()
                await lag_task
                # Let status settle (pods ready → readyReplicas), then measure a quiet window.
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    mds = emu.objects_of(C.PLURAL, C.GROUP, "bench", copy_=False)
                    if all(m.get("status", {}).get("readyReplicas") == 1 for m in mds):
                        break
                    await asyncio.sleep(0.2)
                initial_reqs, initial_writes, initial_kinds = operator_requests(emu, start_req)
                await asyncio.sleep(resync * min(2, quiet))
                quiet_start = emu.request_count
                window = resync * quiet
                await asyncio.sleep(window)
                quiet_reqs, quiet_writes, _ = operator_requests(emu, quiet_start)
                rss = rss_mib(proc.pid)
                skipped = await metric(f"http://127.0.0.1:{metrics_port}/metrics",
                                       "supernode_operator_reconcile_skipped_total")
        finally:
            proc.terminate()
            await proc.wait()
    lat, api, own, pickup = [], [], [], []
    for name, end in done.items():
        start = applied[name]
        first = min((a for a, _ in emu.busy.get(name, [])), default=end)
        pickup.append(first - start)
        delivery = max(0.0, emu.added.get(name, start) - start)  # server-side: apply until the ADDED event is out
        served = delivery + busy_within(emu.busy.get(name, []), start + delivery, end)
        lat.append(end - start)
        api.append(served)
        own.append(end - start - served)
    return Figures(count=count, created=len(done), total=total, lat=lat, api=api, own=own, pickup=pickup, lags=lags,
                   cpu_op=cpu_op, cpu_api=cpu_api, initial_reqs=initial_reqs, initial_writes=initial_writes,
                   initial_kinds=initial_kinds, quiet_reqs=quiet_reqs, quiet_writes=quiet_writes,
                   resyncs=window / resync, rss=rss, skipped=skipped)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ms(values: list[float], q: float | None = None) -> float:
    if not values:
        return float("nan")
    return (statistics.median(values) if q is None else pct(values, q)) * 1000


def report(f: Figures, label: str) -> None:
    count = f.count
    print(f"[{label}] ModelDeployments: {count} (1 group x 2 pods each), children created for {f.created} in "
          f"{f.total:.1f}s (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"apply -> all children created: median {ms(f.lat):.0f} ms, p99 {ms(f.lat, 0.99):.0f} ms")
    print(f"  of which the test API server: median {ms(f.api):.0f} ms, "
          f"p99 {ms(f.api, 0.99):.0f} ms (serving this deployment's requests and watch event)")
    print(f"  of which the operator:        median {ms(f.own):.0f} ms, "
          f"p99 {ms(f.own, 0.99):.0f} ms (everything else, incl. waiting for the server's event loop)")
    print(f"  apply -> the operator's first request for it: median {ms(f.pickup):.0f} ms, "
          f"p99 {ms(f.pickup, 0.99):.0f} ms")
    print(f"  API server event-loop lag: median {ms(f.lags):.1f} ms, "
          f"p99 {ms(f.lags, 0.99):.1f} ms; CPU during the burst: operator {f.cpu_op:.1f} s, "
          f"API server + fake kubelet {f.cpu_api:.1f} s (wall {f.total:.1f} s); operator CPU per deployment "
          f"{f.cpu_op / max(1, f.created) * 1000:.0f} ms")
    print(f"initial reconcile (to all ready): {f.initial_reqs / count:.1f} API requests/MD "
          f"({f.initial_writes / count:.1f} writes/MD: "
          + ", ".join(f"{k} {v / count:.1f}" for k, v in f.initial_kinds.most_common()) + ")")
    print(f"no-op resync: {f.quiet_reqs / count / f.resyncs:.1f} API requests/MD per resync, "
          f"{f.quiet_writes} writes in {f.resyncs:.0f} resyncs x {count} MDs")
    print(f"reconcile passes skipped (echo events): {f.skipped:.0f}; operator RSS: {f.rss:.0f} MiB")


def side_by_side(base: Figures, now: Figures, ref: str) -> None:
    rows = [
        ("apply -> children, median (ms)", ms(base.lat), ms(now.lat)),
        ("apply -> children, p99 (ms)", ms(base.lat, 0.99), ms(now.lat, 0.99)),
        ("  test API server part, median (ms)", ms(base.api), ms(now.api)),
        ("  test API server part, p99 (ms)", ms(base.api, 0.99), ms(now.api, 0.99)),
        ("  operator part, median (ms)", ms(base.own), ms(now.own)),
        ("  operator part, p99 (ms)", ms(base.own, 0.99), ms(now.own, 0.99)),
        ("operator CPU per deployment (ms)", base.cpu_op / max(1, base.created) * 1000,
         now.cpu_op / max(1, now.created) * 1000),
        ("API requests per deployment, to ready", base.initial_reqs / base.count, now.initial_reqs / now.count),
        ("writes per deployment, to ready", base.initial_writes / base.count, now.initial_writes / now.count),
    ]
    print(f"\nside by side, same emulator and load: baseline = the operator at {ref}")
    print(f"{'':40} {'baseline':>10} {'this tree':>10} {'ratio (baseline / this)':>24}")
    for name, b, n in rows:
        print(f"{name:40} {b:10.1f} {n:10.1f} {b / n if n else float('nan'):23.2f}x")


def main(count: int, resync: float, quiet: int, baseline: str | None, profile: str | None = None) -> Figures:
    base = None
    if baseline:
        with tempfile.TemporaryDirectory() as tmp:
            base = asyncio.run(run(count, resync, quiet, baseline_tree(baseline, Path(tmp))))
        report(base, f"baseline {baseline}")
        print()
    now = asyncio.run(run(count, resync, quiet, ROOT, profile))
    report(now, "this tree")
    if base is not None:
        side_by_side(base, now, baseline or "")
    return now


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also run the operator as of this commit first, against a fresh emulator, and print "
                             "both side by side with ratios")
    parser.add_argument("--resync", type=float, default=5.0)
    parser.add_argument("--quiet", type=int, default=5, help="resync intervals in the no-op window")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile this tree's operator during the burst into FILE (python -m pstats FILE)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 10 deployments, short windows")
    args = parser.parse_args()
    if args.smoke:
        out = main(10, resync=0.25, quiet=2, baseline=args.baseline, profile=args.profile)
        if out.created != 10 or out.quiet_writes:
            sys.exit(f"smoke: children for {out.created}/10 deployments, {out.quiet_writes} no-op writes")
    else:
        main(args.count, args.resync, quiet=args.quiet, baseline=args.baseline, profile=args.profile)
