"""Measured capacity vs declared weights: two fake engines of one model, one decoding 4x faster, behind our
router (a real process), the declared capacityWeights wrong the other way round (fast 1, slow 4).

The same closed-loop load (N streaming clients, distinct prompts) runs against three routers side by side:
`declared` (routing.capacity.measure: false, the wrong weights decide), `measured` (the default: the
router learns each group's capacity from its traffic), and `declared-right` (weights 4 : 1 stated by hand,
measure off) as the reference. Prints requests/s, p50/p99 latency and the fast engine's share, and the
ratios measured / declared. `--smoke`: a few seconds, run by the test suite.

    .venv/bin/python benchmarks/router_measured_capacity.py [--clients 12 --seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import FAKE_ENGINE, MODEL, Procs, free_ports, pct, wait_http


def start_engines(procs: Procs, fast_ms: float, slow_ms: float, slots: int) -> tuple[int, int]:
    fast, slow = free_ports(2)
    for name, port, ms in (("fast", fast, fast_ms), ("slow", slow, slow_ms)):
        proc = procs.spawn([sys.executable, str(FAKE_ENGINE), "--port", str(port), "--name", name, "--decode-ms",
                            str(ms), "--concurrency", str(slots), "--answer-words", "8"], f"engine-{name}")
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
    return fast, slow


def start_router(procs: Procs, name: str, fast: int, slow: int, weights: tuple[float, float], measure: bool,
                 slots: int) -> str:
    port = free_ports(1)[0]
    url = procs.our_router(port, [fast, slow], name=name, max_concurrency=slots,
                           routing={"capacity": {"measure": measure, "min_samples": 10}})
    pools = ((fast, "fast", weights[0]), (slow, "slow", weights[1]))
    eps = [{"url": f"http://127.0.0.1:{p}", "model": MODEL, "maxConcurrency": slots, "deployment": "bench",
            "pool": pool, "capacityWeight": w} for p, pool, w in pools]
    (procs.tmp / "endpoints.json").write_text(json.dumps({"endpoints": eps}))  # the router polls it
    time.sleep(1.0)
    return url


async def load(url: str, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    served = {"fast": 0, "slow": 0}
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def client(h: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            body = {"model": MODEL, "stream": True, "max_tokens": 64,
                    "messages": [{"role": "user", "content": f"question {i} " * 8}]}
            t0 = time.perf_counter()
            async with h.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                async for _ in r.aiter_bytes():
                    pass
            latencies.append(time.perf_counter() - t0)
            served["fast" if r.headers.get("x-supernode-endpoint", "").startswith("bench/fast/") else "slow"] += 1

    async with httpx.AsyncClient(timeout=30) as h:
        await asyncio.gather(*(client(h) for _ in range(clients)))
    n = len(latencies)
    return {"rps": n / seconds, "p50": pct(latencies, 50), "p99": pct(latencies, 99),
            "fast_share": served["fast"] / max(1, n)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fast-ms", type=float, default=4.0, help="fast engine: ms per generated word")
    ap.add_argument("--slow-ms", type=float, default=16.0, help="slow engine: ms per generated word")
    ap.add_argument("--slots", type=int, default=8, help="requests each engine runs at once")
    ap.add_argument("--smoke", action="store_true", help="a few-second run (the test suite runs it)")
    a = ap.parse_args()
    if a.smoke:
        a.clients, a.seconds = 4, 0.6  # ~25 requests per run: every path runs, the figures mean little
    rows: dict[str, dict[str, float]] = {}
    runs = [("declared", (1.0, 4.0), False), ("measured", (1.0, 4.0), True), ("declared-right", (4.0, 1.0), False)]
    with Procs() as procs:  # one pair of engines; a router per run, each loading them in turn
        fast, slow = start_engines(procs, a.fast_ms, a.slow_ms, a.slots)
        for name, weights, measure in runs[:2] if a.smoke else runs:
            url = start_router(procs, name, fast, slow, weights, measure, a.slots)
            asyncio.run(load(url, a.clients, min(2.0, a.seconds / 2)))  # warm-up: the measured router learns here
            rows[name] = asyncio.run(load(url, a.clients, a.seconds))
    print(f"{a.clients} clients, {a.seconds:g} s; fast {a.fast_ms:g} ms/word, slow {a.slow_ms:g} ms/word, "
          f"{a.slots} slots each; declared weights fast 1 : slow 4 (wrong)")
    print(f"{'router':<16}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'fast share':>12}")
    for name, r in rows.items():
        print(f"{name:<16}{r['rps']:>8.1f}{r['p50'] * 1000:>9.1f}{r['p99'] * 1000:>9.1f}{r['fast_share']:>12.2f}")
    m, d = rows["measured"], rows["declared"]
    print(f"ratio measured / declared: req/s {m['rps'] / d['rps']:.2f}, p50 {m['p50'] / d['p50']:.2f}, "
          f"p99 {m['p99'] / d['p99']:.2f}")
    print(f"(machine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
