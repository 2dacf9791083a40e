"""Router benchmark 1: the router's own added latency and max sustained request rate.

Fake engines answer instantly (tests/router/fake_engine.py, two on one process). We measure, in the
same run and against the same engines: direct calls, our router (one worker process), and
`sglang-router` (cache_aware). Latency: sequential non-streaming chat requests (concurrency 1), p50/p99;
added latency = router p50/p99 minus direct. Throughput: closed loop at fixed concurrency for a few
seconds. All processes share this machine's cores with the load generator, so absolute req/s are a
floor; compare the columns. `CPU us/req`: the router process's own CPU time (user + system, all
threads) during the throughput phase per completed request, a figure that moves far less with the
machine's load than the latencies do.

    python benchmarks/router_overhead.py [--requests 300] [--seconds 6] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import MODEL, Procs, cpu_seconds, free_ports, pct


def body(i: int) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "system", "content": "You are terse. " * 20},
                                         {"role": "user", "content": f"question {i}"}], "max_tokens": 8}


async def latency(url: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=10) as c:
        for i in range(20):  # warm-up: connections, caches
            await c.post(f"{url}/v1/chat/completions", json=body(i))
        for i in range(n):
            t0 = time.perf_counter()
            r = await c.post(f"{url}/v1/chat/completions", json=body(i))
            out.append(time.perf_counter() - t0)
            r.raise_for_status()
    return out


async def throughput(url: str, seconds: float, concurrency: int) -> tuple[float, int]:
    done = errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as c:
        async def worker(k: int) -> None:
            nonlocal done, errors
            i = 0
            while time.perf_counter() < stop:
                i += 1
                try:
                    r = await c.post(f"{url}/v1/chat/completions", json=body(k * 100000 + i))
                    if r.status_code == 200:
                        done += 1
                    else:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done / (time.perf_counter() - t0), errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--smoke", action="store_true", help="a few-second run on tiny sizes (the test suite runs it)")
    a = ap.parse_args()
    if a.smoke:
        a.requests, a.seconds, a.concurrency = 20, 0.5, 4
    e1, e2, ours_port, sg_port = free_ports(4)
    with Procs() as procs:
        procs.engines([e1, e2])
        targets: dict[str, str] = {"direct": f"http://127.0.0.1:{e1}"}
        targets["supernode"] = procs.our_router(ours_port, [e1, e2])
        pids = {"supernode": procs.pids["router"]}
        try:
            if a.smoke:
                raise RuntimeError("skipped in --smoke")
            targets["sglang-router"] = procs.sglang_router(sg_port, [e1, e2], "cache_aware")
            pids["sglang-router"] = procs.pids["sglang-cache_aware"]
        except (RuntimeError, TimeoutError) as e:
            print(f"sglang-router: could not run ({e})")
        rows = {}
        for name, url in targets.items():
            lat = asyncio.run(latency(url, a.requests))
            cpu0 = cpu_seconds(pids[name]) if name in pids else None
            t0 = time.perf_counter()
            rps, errors = asyncio.run(throughput(url, a.seconds, a.concurrency))
            cpu1 = cpu_seconds(pids[name]) if name in pids else None
            done = rps * (time.perf_counter() - t0)
            cpu_us = (cpu1 - cpu0) / done * 1e6 if cpu0 is not None and cpu1 is not None and done else None
            rows[name] = (pct(lat, 50) * 1000, pct(lat, 99) * 1000, rps, errors, cpu_us)
        base50, base99 = rows["direct"][0], rows["direct"][1]
        print(f"\nrouter overhead: {a.requests} sequential requests; throughput at concurrency {a.concurrency} "
              f"for {a.seconds:g}s (fake engines answer instantly; one router worker process)")
        print(f"{'target':<15}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}{'req/s':>9}{'errors':>8}"
              f"{'CPU us/req':>12}")
        for name, (p50, p99, rps, errors, cpu_us) in rows.items():
            added = ("-", "-") if name == "direct" else (f"{p50 - base50:.2f}", f"{p99 - base99:.2f}")
            cpu = "-" if cpu_us is None else f"{cpu_us:.0f}"
            print(f"{name:<15}{p50:>9.2f}{p99:>9.2f}{added[0]:>11}{added[1]:>11}{rps:>9.0f}{errors:>8}{cpu:>12}")


if __name__ == "__main__":
    main()
    print(f"(machine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
