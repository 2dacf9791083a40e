"""Router benchmark 2: routing quality on a simulated fleet, precise vs approximate prefix index.

Fleet: 8 fake engines on 127.0.0.1 (tests/router/fake_engine.py, one process), each with a real LRU
prefix cache of N blocks (64 bytes of rendered prompt per block) that publishes its changes, evictions
included, as KV events (`/v1/kv_events`, the built-in engine's format); prefill time proportional to
the uncached blocks, `concurrency` slots per engine (requests beyond wait) and a fixed decode time.

Workloads (open loop, Poisson arrivals, the same seeded schedule for every router; multi-turn chats,
a conversation's next turn carries the whole history):
- hot: T tenants with long system prompts, one sending `hot_share` of all traffic (more than one
  engine can serve);
- churn: many tenants, uniform, whose working set exceeds the fleet's cache: engines evict all along.

Routers: ours with the precise index (engines' KV events) and with the approximate one (its own
picks), each as 1 replica and as 3 replicas behind a round-robin front (the load generator rotates
over them); sglang-router cache_aware and round_robin (the `bench` extra) when installed.
Measured: engine-side prefix-cache hit rate, TTFT p50/p99 (first streamed byte), completed req/s.

The fake engines' "tokens" are the prompt's UTF-8 bytes, and the router has no tokenizer for them;
the precise runs start the router through `router_bench_common.BYTE_TOKENS_ROUTER`, which sets each
request's token block hashes to its byte block hashes (what a router with the engine's tokenizer
computes), so the precise index and the requests hash the same units.

    python benchmarks/router_routing_quality.py [--workload hot|churn|both] [--rate 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import Procs, free_ports, pct
from routing_quality_load import engine_hits, run_load, schedule, system_prompt

ENGINES = 8
WORKLOADS = {  # name -> (tenants, hot share, system prompt blocks, cache blocks per engine)
    "hot": (24, 0.5, 48, 600),
    "churn": (96, 0.0, 40, 300),
}


RouterStart = Callable[[Procs], list[str]]


def routers(engine_ports: list[int], a: argparse.Namespace) -> dict[str, RouterStart]:
    """name -> how to start its replicas (each router runs alone: started before its run, stopped after)."""
    out: dict[str, RouterStart] = {}
    for mode in ("precise", "approximate"):
        for n in (1,) if a.smoke else (1, 3):
            def start(procs: Procs, mode: str = mode, n: int = n) -> list[str]:
                return [procs.our_router(free_ports(1)[0], engine_ports, max_concurrency=a.concurrency,
                                         routing={"prefix": {"kv_events": mode == "precise"}},
                                         extra={"health": {"scrape_interval_s": a.scrape_s}},
                                         name=f"{mode}-{n}-{i}", byte_tokens=mode == "precise")
                        for i in range(n)]
            out[f"{mode} x{n}"] = start
    if a.no_peers:
        return out
    if shutil.which("sglang-router") is None and not (Path(sys.executable).parent / "sglang-router").exists():
        print("sglang-router: skipped, not installed (pip install 'supernode[bench]' or sglang-router==0.3.2)")
        return out
    for name, policy in (("sglang cache_aware", "cache_aware"), ("round-robin", "round_robin")):
        def start_sglang(procs: Procs, policy: str = policy) -> list[str]:
            return [procs.sglang_router(free_ports(1)[0], engine_ports, policy)]
        out[name] = start_sglang
    return out


def run_workload(name: str, a: argparse.Namespace) -> dict[str, tuple[float, float, float, float, int, int]]:
    tenants, hot_share, system_blocks, cache_blocks = WORKLOADS[name]
    if a.smoke:
        tenants = min(tenants, 8)
    plan = schedule(a.rate, a.seconds, tenants, hot_share, a.seed)
    prompts = [system_prompt(t, system_blocks) for t in range(tenants)]
    print(f"\n== {name}: {len(plan)} requests over {a.seconds:g}s ({a.rate:g}/s), {tenants} tenants, hot share "
          f"{hot_share:.0%}, system prompt {system_blocks} blocks; {ENGINES} engines x {a.concurrency} slots, "
          f"cache {cache_blocks} blocks each ({ENGINES * cache_blocks} in the fleet)")
    rows = {}
    engine_ports = free_ports(ENGINES)
    with Procs() as procs:
        procs.engines(engine_ports, "--cache-blocks", str(cache_blocks), "--block-cost-ms", str(a.block_cost_ms),
                      "--decode-ms", str(a.decode_ms), "--concurrency", str(a.concurrency), "--answer-words", "6")
        # 2 s of unmeasured traffic per router (other prompts, so no router starts with a useful index)
        warm = [(i * 0.02, i % tenants) for i in range(20 if a.smoke else 100)]
        warm_prompts = [system_prompt(1000 + t, system_blocks) for t in range(tenants)]
        for router, start in routers(engine_ports, a).items():
            if a.only and router not in a.only:
                continue
            with Procs() as router_procs:
                try:
                    urls = start(router_procs)
                except (RuntimeError, TimeoutError) as e:
                    print(f"{router}: skipped, it did not start ({e})")
                    continue
                asyncio.run(run_load(urls, warm, warm_prompts, a.seed + 1, drain_s=10))
                asyncio.run(engine_hits(engine_ports, reset=True))
                ttfts, ok, failed, elapsed = asyncio.run(run_load(urls, plan, prompts, a.seed,
                                                                  drain_s=a.seconds + 30))
                hit, total = asyncio.run(engine_hits(engine_ports, reset=False))
            rows[router] = (hit / total if total else 0.0, pct(ttfts, 50), pct(ttfts, 99), ok / elapsed, ok, failed)
    print(f"{'router':<22}{'hit rate':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'req/s':>8}{'done':>6}{'failed':>8}")
    for router, (hr, p50, p99, rps, ok, failed) in rows.items():
        print(f"{router:<22}{hr:>9.1%}{p50 * 1000:>8.0f}ms{p99 * 1000:>8.0f}ms{rps:>8.1f}{ok:>6}{failed:>8}")
    compare(rows)
    return rows


def compare(rows: dict[str, tuple[float, float, float, float, int, int]]) -> None:
    """The targets: 3 replicas match 1 (hit rate within 0.03, TTFT p99 within 10 %); precise >= approximate."""
    for mode in ("precise", "approximate"):
        one, three = rows.get(f"{mode} x1"), rows.get(f"{mode} x3")
        if one and three:
            print(f"{mode}: 3 replicas vs 1: hit rate {three[0] - one[0]:+.3f}, TTFT p99 ratio "
                  f"{three[2] / one[2] if one[2] else float('nan'):.2f}")
    p, ap = rows.get("precise x1"), rows.get("approximate x1")
    if p and ap:
        print(f"precise vs approximate (1 replica): hit rate {p[0] - ap[0]:+.3f}, TTFT p99 ratio "
              f"{p[2] / ap[2] if ap[2] else float('nan'):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", choices=("hot", "churn", "both"), default="both")
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second offered")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--block-cost-ms", type=float, default=3.0, help="prefill time per uncached block")
    ap.add_argument("--decode-ms", type=float, default=15.0, help="time per generated chunk (6 chunks)")
    ap.add_argument("--concurrency", type=int, default=2, help="slots per engine")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scrape-s", type=float, default=1.0, help="our routers' engine scrape interval (load)")
    ap.add_argument("--only", action="append", default=[], metavar="ROUTER", help="run only these, e.g. 'precise x3'")
    ap.add_argument("--no-peers", action="store_true", help="skip sglang-router")
    ap.add_argument("--verbose", action="store_true", help="print the slowest requests")
    ap.add_argument("--smoke", action="store_true", help="a few-second run on tiny sizes (the test suite runs it)")
    a = ap.parse_args()
    if a.smoke:
        a.rate, a.seconds, a.no_peers, a.workload = 20.0, 1.0, True, "churn"
    for name in (("hot", "churn") if a.workload == "both" else (a.workload,)):
        run_workload(name, a)


if __name__ == "__main__":
    main()
    print(f"(machine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
