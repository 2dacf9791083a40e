"""Operator at scale against the test Kubernetes API (tests/operator/k8s_emulator.py).

Starts the emulator + a fake StatefulSet controller/kubelet in this process and the real operator as a
subprocess (`supernode operator --server URL`), applies N ModelDeployments (2-pod Ascend groups, one per
SuperPoD), and prints: apply → all children created (median, p99), API requests per ModelDeployment
for the initial reconcile and for a no-op resync, writes during the resync, and the operator's RSS.

    python benchmarks/operator_scale.py --count 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "operator"), str(ROOT / "tests")]  # the emulator, fake cluster, builders

import httpx  # noqa: E402
import kmock  # noqa: E402
from builders import make_md  # noqa: E402
from fake_cluster import MD_KIND, FakeCluster, node  # noqa: E402
from k8s_emulator import K8sEmulator  # noqa: E402

from supernode.api import constants as C  # noqa: E402

UA = "operator-bench"


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


def children_count(emu: K8sEmulator) -> dict[str, int]:
    """Children per deployment (StatefulSet + 2 Services + PDB = 4 when complete), one pass, no copies."""
    counts: dict[str, int] = {}
    for (gp, ns, _), obj in list(emu.store.items()):
        if ns == "bench" and gp in ("apps/statefulsets", "/services", "policy/poddisruptionbudgets"):
            owner = (obj["metadata"].get("labels") or {}).get(C.LABEL_DEPLOYMENT)
            if owner:
                counts[owner] = counts.get(owner, 0) + 1
    return counts


async def main(count: int, resync: float) -> None:
    async with K8sEmulator(strict=False) as emu, kmock.Server(emu) as srv:
        url = str(srv.url).rstrip("/")
        emu.declare(MD_KIND)
        cluster = FakeCluster(emu)
        await cluster.add_nodes(*(node(f"sp{i}-n{j}", f"sp-{i}") for i in range(count) for j in range(2)))
        paths = [str(ROOT / p) for p in ("crds", "operator", "engine", "router", "cli")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "supernode.cli", "operator", "-A", "--standalone", "--server", url,
            "--resync", str(resync), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            await asyncio.sleep(2.0)  # operator start-up and initial listing
            async with cluster.running(period=0.2), httpx.AsyncClient(base_url=url, headers={"User-Agent": UA}) as c:
                start_req = emu.request_count
                applied: dict[str, float] = {}
                done: dict[str, float] = {}
                t0 = time.monotonic()
                for i in range(count):
                    md = (make_md(f"md-{i:03d}").namespace("bench").engine("vllm").accelerator("ascend-910c", 16)
                          .parallelism(tensor=32).placement(supernode="Required").replicas(1).dict())
                    r = await c.post(f"/apis/{C.GROUP}/{C.VERSION}/namespaces/bench/{C.PLURAL}", json=md)
                    r.raise_for_status()
                    applied[md["metadata"]["name"]] = time.monotonic()
                while len(done) < count and time.monotonic() - t0 < 300:
                    counts = children_count(emu)
                    for name in applied:
                        if name not in done and counts.get(name) == 4:
                            done[name] = time.monotonic()
                    await asyncio.sleep(0.05)
                total = time.monotonic() - t0
                # Let status settle (pods ready → readyReplicas), then measure a quiet window.
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    mds = emu.objects_of(C.PLURAL, C.GROUP, "bench", copy_=False)
                    if all(m.get("status", {}).get("readyReplicas") == 1 for m in mds):
                        break
                    await asyncio.sleep(0.5)
                initial_reqs, initial_writes, initial_kinds = operator_requests(emu, start_req)
                await asyncio.sleep(resync * 2)
                quiet_start = emu.request_count
                window = resync * 5
                await asyncio.sleep(window)
                quiet_reqs, quiet_writes, _ = operator_requests(emu, quiet_start)
                rss = rss_mib(proc.pid)
        finally:
            proc.terminate()
            await proc.wait()
    lat = sorted(done[n] - applied[n] for n in done)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    resyncs = window / resync
    print(f"ModelDeployments: {count} (1 group x 2 pods each), children created for {len(done)} in {total:.1f}s")
    print(f"apply -> all children created: median {statistics.median(lat) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(f"initial reconcile (to all ready): {initial_reqs / count:.1f} API requests/MD "
          f"({initial_writes / count:.1f} writes/MD: "
          + ", ".join(f"{k} {v / count:.1f}" for k, v in initial_kinds.most_common()) + ")")
    print(f"no-op resync: {quiet_reqs / count / resyncs:.1f} API requests/MD per resync, "
          f"{quiet_writes} writes in {resyncs:.0f} resyncs x {count} MDs")
    print(f"operator RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--resync", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.resync))
