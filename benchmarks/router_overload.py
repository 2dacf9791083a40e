"""Overload benchmark: offered load 2x capacity against the gatekeeper, throttling on vs off.

In-process, pure asyncio (no sockets): a simulated engine pool serves admitted requests as a
processor-sharing server with ``--capacity`` full-speed slots, so without admission control every
request slows down as concurrency grows (the engine takes everything). Each request carries an
end-to-end bound (``--bound``, the client's patience): a request *succeeds* when it is admitted and
finishes within it. Tiers: premium sends ``--premium-share`` of the load, free the rest (several
tenants each). Real time, bounded: 2 x ``--seconds`` plus drain.

    python benchmarks/router_overload.py --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from supernode.api.models import Mode
from supernode.router.admission import AdmissionConfig, build_gatekeeper
from supernode.router.admission.testing import StaticCapacity, ctx, tenant, tenants_file, usage_record
from supernode.router.contracts import PoolKey, Tenant, Usage
from supernode.router.errors import AdmissionRejected
from supernode.router.metering import SqliteLedger

POOL = PoolKey("deepseek-v4-flash", Mode.NON_THINK)
TICK = 0.01


@dataclass
class Engine:
    """Processor sharing: n active requests each progress at min(1, capacity / n) work-seconds per second."""

    capacity: int
    active: dict[int, list[float]] = field(default_factory=dict)  # id → [remaining work, ...]
    done: dict[int, asyncio.Event] = field(default_factory=dict)
    _ids: int = 0
    useful: float = 0.0  # work-seconds spent on requests that completed
    wasted: float = 0.0  # work-seconds spent on requests the client gave up on

    async def serve(self, work: float) -> None:
        self._ids += 1
        i = self._ids
        self.active[i] = [work]
        ev = self.done[i] = asyncio.Event()
        try:
            await ev.wait()
            self.useful += work
        except asyncio.CancelledError:
            self.wasted += work - max(0.0, self.active[i][0])
            raise
        finally:
            self.active.pop(i, None)
            self.done.pop(i, None)

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            dt, last = now - last, now
            n = len(self.active)
            if not n:
                continue
            step = dt * min(1.0, self.capacity / n)
            for i, rem in list(self.active.items()):
                rem[0] -= step
                if rem[0] <= 0:
                    self.done[i].set()


@dataclass
class Outcome:
    ok: int = 0
    late: int = 0  # admitted but finished after the bound (or abandoned by the client)
    rejected: int = 0  # 429, answered fast
    latencies: list[float] = field(default_factory=list)


async def one(gate: object, engine: Engine, t: Tenant, work: float, bound: float, out: Outcome) -> None:
    start = time.monotonic()
    try:
        async with asyncio.timeout(bound):
            ticket = await gate.admit(ctx(t).tokens(200, 200).obj(), [POOL])  # type: ignore[attr-defined]
            try:
                await engine.serve(work)
            finally:
                ticket.release(Usage(200, 0, 200, 0))
    except AdmissionRejected:
        out.rejected += 1
        return
    except TimeoutError:
        out.late += 1
        return
    out.ok += 1
    out.latencies.append(time.monotonic() - start)


async def scenario(args: argparse.Namespace, throttling: bool, tenants_path: Path) -> dict[str, Outcome]:
    cap = StaticCapacity({POOL: args.capacity})
    cfg = AdmissionConfig.model_validate(
        {
            "tenantsFile": str(tenants_path),
            "throttling": throttling,
            "queue": {"maxWaitSeconds": args.bound - 2 * args.service, "dispatchIntervalSeconds": 0},
        }
    )
    gate = build_gatekeeper(cfg, cap)
    engine = Engine(args.capacity)
    runner = asyncio.create_task(engine.run())
    rng = random.Random(args.seed)
    premium = [gate.authenticate(f"k-p{i}") for i in range(2)]
    free = [gate.authenticate(f"k-f{i}") for i in range(4)]
    rate = args.load * args.capacity / args.service  # offered requests per second
    outs: dict[str, Outcome] = defaultdict(Outcome)
    tasks: list[asyncio.Task[None]] = []
    t_start = time.monotonic()
    t_end = t_start + args.seconds
    while time.monotonic() < t_end:
        await asyncio.sleep(rng.expovariate(rate))
        t = rng.choice(premium) if rng.random() < args.premium_share else rng.choice(free)
        work = rng.expovariate(1 / args.service)
        tasks.append(asyncio.create_task(one(gate, engine, t, work, args.bound, outs[t.tier])))
    await asyncio.gather(*tasks)
    runner.cancel()
    busy = engine.wasted + engine.useful
    elapsed = time.monotonic() - t_start
    outs["_engine"].latencies = [engine.useful / max(1e-9, busy), engine.useful / (args.capacity * elapsed)]
    return outs


def report(name: str, outs: dict[str, Outcome], *, engine: bool = True) -> None:
    for tier in ("premium", "free"):
        o = outs.get(tier, Outcome())
        n = o.ok + o.late + o.rejected
        lat = sorted(o.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[int(0.99 * (len(lat) - 1))] if lat else float("nan")
        print(
            f"  {name:<14} {tier:<8} offered={n:5d}  ok_within_bound={o.ok / n:6.1%}  "
            f"late/timed_out={o.late / n:6.1%}  rejected_429={o.rejected / n:6.1%}  "
            f"latency_ok p50={p50:5.2f}s p99={p99:5.2f}s"
        )
    total = sum(o.ok for o in outs.values()) / max(1, sum(o.ok + o.late + o.rejected for o in outs.values()))
    if not engine:
        print(f"  {name:<14} all      ok_within_bound={total:6.1%}")
        return
    useful_share, useful_vs_capacity = outs.pop("_engine").latencies
    print(
        f"  {name:<14} all      ok_within_bound={total:6.1%}  engine work useful={useful_share:6.1%} "
        f"(wasted on requests that missed their bound: {1 - useful_share:6.1%}); "
        f"useful work / capacity={useful_vs_capacity:6.1%}"
    )


def ledger_commit_cost(n: int = 300) -> None:
    with tempfile.TemporaryDirectory() as d:
        for sync in ("NORMAL", "FULL"):
            led = SqliteLedger(Path(d) / f"{sync}.db", synchronous=sync)
            t0 = time.perf_counter()
            for i in range(n):
                led.record(usage_record(f"r{i}"))
            per = (time.perf_counter() - t0) / n
            led.close()
            print(f"  ledger commit synchronous={sync:<6}: {per * 1e3:.3f} ms/record ({n} records)")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=15.0, help="offered-load duration per scenario")
    p.add_argument("--capacity", type=int, default=8, help="full-speed concurrent slots of the pool")
    p.add_argument("--service", type=float, default=0.25, help="mean service time at full speed (s)")
    p.add_argument("--load", type=float, default=2.0, help="offered load / capacity")
    p.add_argument("--bound", type=float, default=3.0, help="end-to-end bound per request (s)")
    p.add_argument("--premium-share", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--http", action="store_true", help="also run through the real router over HTTP (fake engine)")
    p.add_argument("--smoke", action="store_true", help="a few-second run (the test suite runs it, --http included)")
    args = p.parse_args()
    if args.smoke:
        args.seconds, args.bound, args.service, args.http = 0.5, 1.0, 0.1, True
    with tempfile.TemporaryDirectory() as d:
        path = tenants_file(
            *(tenant(f"prem{i}").tier("premium").key(f"k-p{i}") for i in range(2)),
            *(tenant(f"free{i}").tier("free").key(f"k-f{i}") for i in range(4)),
        ).write(Path(d) / "tenants.yaml")
        print(
            f"overload: {args.load:.1f}x capacity ({args.capacity} slots x {args.service}s mean service = "
            f"{args.capacity / args.service:.0f} req/s), bound {args.bound}s, {args.seconds:.0f}s per scenario, "
            f"premium share {args.premium_share:.0%}"
        )
        for throttling in (True, False):
            t0 = time.monotonic()
            outs = await scenario(args, throttling, path)
            report("throttling=" + ("on" if throttling else "off"), outs)
            print(f"  (scenario wall time {time.monotonic() - t0:.1f}s)", file=sys.stderr)
        if args.http:
            await http_scenarios(args, path, Path(d))
    ledger_commit_cost()


async def http_scenarios(args: argparse.Namespace, tenants_path: Path, tmp: Path) -> None:
    from overload_http import run_http

    print("through the real router over HTTP (fake engine with its own FIFO queue behind its slots):")
    for throttling in (True, False):
        res = await run_http(
            throttling=throttling, tenants_path=tenants_path, tmp=tmp, slots=args.capacity, service=args.service,
            load=args.load, bound=args.bound, seconds=args.seconds, premium_share=args.premium_share, seed=args.seed,
        )  # fmt: skip
        outs: dict[str, Outcome] = {}
        for tier, r in res.items():
            outs[tier] = Outcome(ok=r["ok"], late=r["late"], rejected=r["rejected"], latencies=r["lat"])
        report("http throttle=" + ("on" if throttling else "off"), outs, engine=False)


if __name__ == "__main__":
    asyncio.run(main())
