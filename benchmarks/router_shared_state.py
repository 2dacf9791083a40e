"""Router shared state: what Redis admission and the PostgreSQL ledger cost, and how exact they are.

Against the real Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, db `test`), in one process,
each figure next to its baseline from the same run:

* admission latency, p50/p99 of one admit + release (the request path's part of admission):
  local (in-process limits) vs Redis (one Lua reserve, settle in the background); the difference is
  what shared state adds per request. 1 and 3 replicas (gatekeepers) admitting concurrently.
* max admissions/s per replica (closed loop, one replica, then 3 replicas at once).
* limit accuracy under a burst: 3 replicas, a tenant with rpm R, 3R admissions fired at once;
  admitted ÷ R (1.00 = exact; target ≤ 1.02).
* pool capacity at 2x offered load, 1 vs 3 replicas: peak in flight across the fleet (never above the
  capacity), started at once / after queueing / 429.
* ledger: record latency p50/p99, SQLite (WAL, NORMAL) vs PostgreSQL; then 3 ledgers write N rows
  concurrently and the rows are counted (target: zero lost, zero duplicated).

    python benchmarks/router_shared_state.py [--smoke] [--json]

Targets (issue 12): Redis adds ≤ 1 ms p50; overshoot ≤ 2 %; zero ledger rows lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from supernode.api.models import Mode
from supernode.router.admission import AdmissionConfig, build_gatekeeper
from supernode.router.admission.testing import StaticCapacity, ctx, tenant, tenants_file
from supernode.router.contracts import PoolKey, Usage, UsageRecord
from supernode.router.errors import AdmissionRejected
from supernode.router.metering.ledger import SqliteLedger
from supernode.router.metering.postgres import PostgresLedger
from supernode.router.shared.build import redis_client, shared_parts
from supernode.router.shared.config import PostgresLedgerConfig, RedisState
from supernode.router.shared.metrics import BackendMetrics

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
POOL = PoolKey("deepseek-v4-flash", Mode.NON_THINK)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def ms(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(xs, 50) * 1000, 3), "p99_ms": round(pct(xs, 99) * 1000, 3)}


async def gatekeepers(n: int, shared: bool, tmp: Path, prefix: str, rpm: int | None = None) -> list[Any]:
    t = tenant("bench").key("sk-bench")
    # limits on but never reached (the cost of checking them), or the burst tenant's rpm
    t = t.rpm(rpm) if rpm else t.tpm(10**12).concurrency(10**6)
    path = tenants_file(t).write(tmp / f"tenants-{uuid.uuid4().hex[:6]}.yaml")
    cfg = AdmissionConfig.model_validate({"tenantsFile": str(path), "queue": {"dispatchIntervalSeconds": 0}})
    out = []
    for i in range(n):
        if not shared:
            out.append(build_gatekeeper(cfg, StaticCapacity({POOL: 10**6})))
            continue
        st = RedisState.model_validate({"type": "redis", "url": REDIS_URL, "keyPrefix": prefix,
                                        "heartbeatSeconds": 1})
        factory, extra = shared_parts(st, StaticCapacity({POOL: 10**6}), CollectorRegistry(),
                                      client=redis_client(st), replica=f"bench-{i}")
        g = build_gatekeeper(cfg, extra.pop("capacity"), factory=factory, **extra)
        await g.start()
        out.append(g)
    return out


async def stop(gates: list[Any]) -> None:
    for g in gates:
        if hasattr(g, "limits"):
            await g.stop()


async def admission_latency(gates: list[Any], n: int) -> list[float]:
    async def one(g: Any) -> list[float]:
        lat = []
        who = g.authenticate("sk-bench")
        for _ in range(n):
            t0 = time.perf_counter()
            ticket = await g.admit(ctx(who).tokens(100, 100).obj(), [POOL])
            ticket.release(Usage(100, 0, 50, 0))
            lat.append(time.perf_counter() - t0)
        return lat

    got = await asyncio.gather(*(one(g) for g in gates))
    return [x for xs in got for x in xs]


async def admission_rate(gates: list[Any], seconds: float) -> float:
    """Admissions per second per replica, closed loop."""
    done = [0] * len(gates)
    end = time.perf_counter() + seconds

    async def loop(i: int, g: Any) -> None:
        who = g.authenticate("sk-bench")
        while time.perf_counter() < end:
            ticket = await g.admit(ctx(who).tokens(10, 10).obj(), [POOL])
            ticket.release(Usage(10, 0, 10, 0))
            done[i] += 1

    await asyncio.gather(*(loop(i, g) for i, g in enumerate(gates)))
    return sum(done) / seconds / len(gates)


async def burst_accuracy(tmp: Path, rpm: int) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    gates = await gatekeepers(3, True, tmp, prefix, rpm=rpm)
    try:
        who = [g.authenticate("sk-bench") for g in gates]

        async def one(i: int) -> bool:
            g = gates[i % 3]
            try:
                (await g.admit(ctx(who[i % 3]).tokens(1, 1).obj(), [POOL])).release(Usage(1, 0, 1, 0))
                return True
            except AdmissionRejected:
                return False

        t0 = time.perf_counter()
        got = await asyncio.gather(*(one(i) for i in range(3 * rpm)))
        elapsed = time.perf_counter() - t0
    finally:
        await stop(gates)
        await drop_keys(prefix)
    refill = elapsed * rpm / 60  # tokens the bucket legitimately regained during the burst
    return {"rpm": rpm, "sent": 3 * rpm, "admitted": sum(got), "burst_s": round(elapsed, 3),
            "accuracy": round(sum(got) / rpm, 4), "allowed_with_refill": round(rpm + refill, 2)}


async def capacity_overload(tmp: Path, capacity: int, replicas: int, hold_s: float) -> dict[str, Any]:
    """2x the pool's capacity offered at once, round robin over ``replicas``, each request holding its
    slot ``hold_s``; waits bounded at 1.5 x hold_s. Reports the fleet's peak in flight (must stay at
    most the capacity), how many started at once, after queueing, or got a 429."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    path = tenants_file(tenant("bench").key("sk-bench")).write(tmp / f"cap-{prefix}.yaml")
    cfg = AdmissionConfig.model_validate({"tenantsFile": str(path),
                                          "queue": {"dispatchIntervalSeconds": 0, "maxWaitSeconds": 1.5 * hold_s}})
    gates: list[Any] = []
    for i in range(replicas):
        st = RedisState.model_validate({"type": "redis", "url": REDIS_URL, "keyPrefix": prefix,
                                        "heartbeatSeconds": 1})
        factory, extra = shared_parts(st, StaticCapacity({POOL: capacity}), CollectorRegistry(),
                                      client=redis_client(st), replica=f"cap-{i}")
        g = build_gatekeeper(cfg, extra.pop("capacity"), factory=factory, **extra)
        await g.start()
        gates.append(g)
    for g in gates:
        await g.tick()
    now, peak = 0, 0
    outcome = {"immediate": 0, "queued": 0, "rejected_429": 0}

    async def one(i: int) -> None:
        nonlocal now, peak
        g = gates[i % replicas]
        try:
            ticket = await g.admit(ctx(g.authenticate("sk-bench")).tokens(1, 1).obj(), [POOL])
        except AdmissionRejected:
            outcome["rejected_429"] += 1
            return
        outcome["queued" if ticket.queued_seconds > hold_s / 2 else "immediate"] += 1
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(hold_s)
        now -= 1
        ticket.release(Usage(1, 0, 1, 0))

    try:
        await asyncio.gather(*(one(i) for i in range(2 * capacity)))
    finally:
        await stop(gates)
        await drop_keys(prefix)
    return {"replicas": replicas, "capacity": capacity, "offered": 2 * capacity, "peak_in_flight": peak,
            "shares": [g._capacity.capacity(POOL) for g in gates], **outcome}


async def drop_keys(prefix: str) -> None:
    r = aioredis.from_url(REDIS_URL)
    keys = [k async for k in r.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await r.delete(*keys)
    await r.aclose()


def record(i: int, replica: str) -> UsageRecord:
    now = time.time()
    return UsageRecord(request_id=f"{replica}-{i}", tenant="bench", api="openai-chat", model="m",
                       mode=Mode.NON_THINK, served_model="m", served_mode=Mode.NON_THINK, endpoint="e",
                       usage=Usage(100, 10, 50, 0), status="ok", started_at=now, finished_at=now)


def ledger_bench(tmp: Path, n: int) -> dict[str, Any]:
    sqlite = SqliteLedger(tmp / "bench.sqlite3")
    schema = f"bench_{uuid.uuid4().hex[:10]}"

    def pg(name: str) -> PostgresLedger:
        cfg = PostgresLedgerConfig.model_validate({"type": "postgres", "dsn": PG_DSN, "schema": schema,
                                                   "spoolPath": str(tmp / f"spool-{name}.sqlite3")})
        return PostgresLedger(cfg, BackendMetrics(CollectorRegistry()), replica=name)

    def timed(led: Any, prefix: str) -> list[float]:
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            led.record(record(i, prefix))
            lat.append(time.perf_counter() - t0)
        return lat

    ledgers = [pg(f"r{i}") for i in range(3)]
    try:
        out: dict[str, Any] = {"sqlite": ms(timed(sqlite, "sqlite")), "postgres": ms(timed(ledgers[0], "solo"))}
        threads = [threading.Thread(target=timed, args=(led, f"r{i}")) for i, led in enumerate(ledgers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with psycopg.connect(PG_DSN) as c:
            total, distinct = c.execute(f'SELECT COUNT(*), COUNT(DISTINCT request_id) FROM "{schema}".usage '
                                        "WHERE request_id NOT LIKE 'solo-%'").fetchone()  # type: ignore[misc]
        out["fleet_rows"] = {"written": 3 * n, "stored": int(total), "distinct": int(distinct),
                             "lost": 3 * n - int(distinct), "duplicated": int(total) - int(distinct)}
        return out
    finally:
        for led in ledgers:
            led.close()
        sqlite.close()
        with psycopg.connect(PG_DSN, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    n, seconds, rpm = (60, 0.5, 60) if args.smoke else (args.requests, args.seconds, args.rpm)
    results: dict[str, Any] = {"smoke": args.smoke}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        for replicas in (1, 3):
            row: dict[str, Any] = {}
            for kind in ("local", "redis"):
                gates = await gatekeepers(replicas, kind == "redis", tmp, f"{prefix}-{replicas}")
                try:
                    await admission_latency(gates, 20)  # warm-up
                    lat = await admission_latency(gates, n)
                    rate = await admission_rate(gates, seconds)
                finally:
                    await stop(gates)
                row[kind] = {**ms(lat), "admissions_per_s_per_replica": round(rate)}
            row["redis_added_p50_ms"] = round(row["redis"]["p50_ms"] - row["local"]["p50_ms"], 3)
            row["redis_added_p99_ms"] = round(row["redis"]["p99_ms"] - row["local"]["p99_ms"], 3)
            results[f"admission_{replicas}_replica{'s' if replicas > 1 else ''}"] = row
        await drop_keys(prefix)
        results["burst"] = await burst_accuracy(tmp, rpm)
        results["capacity_2x"] = [await capacity_overload(tmp, 12, r, 0.2 if args.smoke else 1.0) for r in (1, 3)]
        results["ledger"] = await asyncio.to_thread(ledger_bench, tmp, n)
    b, f = results["burst"], results["ledger"]["fleet_rows"]
    results["targets"] = {
        "redis_added_p50_le_1ms": results["admission_1_replica"]["redis_added_p50_ms"] <= 1.0,
        "overshoot_le_2pct": b["admitted"] <= b["allowed_with_refill"] * 1.02,
        "zero_rows_lost_or_duplicated": f["lost"] == 0 and f["duplicated"] == 0,
        "capacity_never_granted_twice": all(c["peak_in_flight"] <= c["capacity"] for c in results["capacity_2x"]),
    }
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--smoke", action="store_true", help="a few seconds: small counts (the test suite runs this)")
    p.add_argument("--requests", type=int, default=2000, help="admissions / ledger rows per measurement")
    p.add_argument("--seconds", type=float, default=3.0, help="closed-loop throughput phase")
    p.add_argument("--rpm", type=int, default=600, help="the burst tenant's rpm")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(results))
        return 0
    for key in ("admission_1_replica", "admission_3_replicas"):
        r = results[key]
        print(f"{key}: local p50 {r['local']['p50_ms']} ms p99 {r['local']['p99_ms']} ms "
              f"{r['local']['admissions_per_s_per_replica']}/s | redis p50 {r['redis']['p50_ms']} ms "
              f"p99 {r['redis']['p99_ms']} ms {r['redis']['admissions_per_s_per_replica']}/s | added p50 "
              f"{r['redis_added_p50_ms']} ms p99 {r['redis_added_p99_ms']} ms")
    b = results["burst"]
    print(f"burst: rpm {b['rpm']}, {b['sent']} sent over 3 replicas in {b['burst_s']} s -> {b['admitted']} admitted "
          f"(accuracy {b['accuracy']}, allowed incl. refill {b['allowed_with_refill']})")
    led = results["ledger"]
    print(f"ledger record: sqlite p50 {led['sqlite']['p50_ms']} ms p99 {led['sqlite']['p99_ms']} ms | postgres "
          f"p50 {led['postgres']['p50_ms']} ms p99 {led['postgres']['p99_ms']} ms | 3 writers: {led['fleet_rows']}")
    for c in results["capacity_2x"]:
        print(f"2x capacity ({c['offered']} offered, capacity {c['capacity']}), {c['replicas']} replica(s) "
              f"(shares {c['shares']}): peak in flight {c['peak_in_flight']}, immediate {c['immediate']}, "
              f"queued {c['queued']}, 429 {c['rejected_429']}")
    print("targets:", results["targets"])
    return 0 if all(results["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
