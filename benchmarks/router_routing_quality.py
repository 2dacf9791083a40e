"""Router benchmark 2: routing quality on a simulated fleet, precise vs approximate prefix index.

Fleet: 8 fake engines on 127.0.0.1 (tests/router/fake_engine.py, one process), each with a real LRU
prefix cache of N blocks that publishes its changes, evictions included, as KV events (`/v1/kv_events`,
the built-in engine's format). The engines tokenize for real: a byte-level BPE trained on the workload
(tests/router/fake_sim.py) that they serve at `GET /v1/tokenizer` as the built-in engine does, so our
routers fetch it and hash requests into the engines' token blocks through the product path. A block
holds about 64 bytes of prompt. `concurrency` slots per engine; a request's TTFT comes from a slot model
(FIFO wait for a slot + prefill time per uncached block), not from the event loop, so a loaded machine
does not decide the comparison; a fixed decode time per chunk then holds the slot.

Workloads (open loop, Poisson arrivals, the same seeded schedule for every router within a repeat;
multi-turn chats, a conversation's next turn carries the whole history):
- hot: T tenants with long system prompts, one sending `hot_share` of all traffic (more than one
  engine can serve);
- churn: many tenants, uniform, whose working set exceeds the fleet's cache: engines evict all along.

Routers: ours with the precise index (engines' KV events) and with the approximate one (its own
picks), each as 1 replica and as 3 replicas behind a round-robin front (the load generator rotates
over them); sglang-router cache_aware and round_robin (the `bench` extra) when installed.
Measured: engine-side prefix-cache hit rate, modelled TTFT p50/p99 (engine: queue + prefill) and the
client's TTFT p99 (first streamed byte, machine noise included), completed req/s. Each repeat runs every
router once on its own seed (the order rotates); ratios are taken within a repeat and their median printed.

    python benchmarks/router_routing_quality.py [--workload hot|churn|both] [--rate 25] [--seconds 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import Procs, free_ports, pct
from routing_quality_load import engine_hits, run_load, schedule, system_prompt, tokenizer_for

ENGINES = 8
WORKLOADS = {  # name -> (tenants, hot share, system prompt blocks, cache blocks per engine)
    "hot": (24, 0.5, 48, 600),
    "churn": (96, 0.0, 40, 300),
}
Row = dict[str, float]  # hit, p50, p99 (modelled TTFT), client_p99, rps, ok, failed
RouterStart = Callable[[Procs], list[str]]


def routers(engine_ports: list[int], a: argparse.Namespace) -> dict[str, RouterStart]:
    """name -> how to start its replicas (each router runs alone: started before its run, stopped after)."""
    out: dict[str, RouterStart] = {}
    for label, scorers in a.profiles:
        for mode in ("precise", "approximate"):
            for n in (1,) if a.smoke else (1, 3):
                routing = {"prefix": {"kv_events": mode == "precise"}, **a.routing}
                if scorers:
                    routing["scorers"] = scorers

                def start(procs: Procs, routing: dict[str, object] = routing, n: int = n,
                          tag: str = f"{mode}-{n}-{label}") -> list[str]:
                    return [procs.our_router(free_ports(1)[0], engine_ports, max_concurrency=a.concurrency,
                                             routing=routing, extra={"health": {"scrape_interval_s": a.scrape_s}},
                                             name=f"{tag}-{i}")
                            for i in range(n)]
                out[f"{mode} x{n}{f' [{label}]' if label else ''}"] = start
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


def exact_prompts(ops_url: str) -> float:
    """Prompts a router of ours encoded with the engines' tokenizer (its /metrics)."""
    text = httpx.get(f"{ops_url}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("supernode_router_prompt_tokenization_total") and 'result="exact"' in line)


def run_one(start: RouterStart, name: str, engine_ports: list[int], plan: list[tuple[float, int]],
            prompts: list[str], warm: tuple[list[tuple[float, int]], list[str]], seed: int,
            drain_s: float) -> Row | None:
    with Procs() as router_procs:
        try:
            urls = start(router_procs)
        except (RuntimeError, TimeoutError) as e:
            print(f"{name}: skipped, it did not start ({e})")
            return None
        asyncio.run(run_load(urls, warm[0], warm[1], seed + 1, drain_s=10))
        if not name.startswith(("sglang", "round")) and not all(exact_prompts(router_procs.ops[u]) > 0 for u in urls):
            raise SystemExit(f"{name}: a replica has not tokenized with the engines' tokenizer")
        asyncio.run(engine_hits(engine_ports, reset=True))
        ttfts, ok, failed, elapsed = asyncio.run(run_load(urls, plan, prompts, seed, drain_s=drain_s))
        hit, total, modelled = asyncio.run(engine_hits(engine_ports, reset=False))
    return {"hit": hit / total if total else 0.0, "p50": pct(modelled, 50), "p99": pct(modelled, 99),
            "client_p99": pct(ttfts, 99), "rps": ok / elapsed, "ok": ok, "failed": failed}


def run_workload(name: str, a: argparse.Namespace) -> dict[str, list[Row]]:
    tenants, hot_share, system_blocks, cache_blocks = WORKLOADS[name]
    if a.smoke:
        tenants = min(tenants, 8)
    prompts = [system_prompt(t, system_blocks) for t in range(tenants)]
    warm = ([(i * 0.02, i % tenants) for i in range(20 if a.smoke else 100)],  # 2 s of other prompts
            [system_prompt(1000 + t, system_blocks) for t in range(tenants)])
    runs: dict[str, list[Row]] = {}
    engine_ports = free_ports(ENGINES)
    with Procs() as procs:
        block_tokens = tokenizer_for(prompts, procs.tmp / "tokenizer.json")
        print(f"\n== {name}: ~{a.rate * a.seconds:.0f} requests over {a.seconds:g}s ({a.rate:g}/s) x {a.repeat} "
              f"repeats, {tenants} tenants, hot share {hot_share:.0%}, system prompt {system_blocks} blocks; "
              f"{ENGINES} engines x {a.concurrency} slots, cache {cache_blocks} blocks of {block_tokens} tokens "
              f"each ({ENGINES * cache_blocks} in the fleet)")
        procs.engines(engine_ports, "--cache-blocks", str(cache_blocks), "--block-cost-ms", str(a.block_cost_ms),
                      "--decode-ms", str(a.decode_ms), "--concurrency", str(a.concurrency), "--answer-words", "6",
                      "--tokenizer", str(procs.tmp / "tokenizer.json"), "--block-tokens", str(block_tokens),
                      "--modelled-ttft")
        # the cost scorer's model of these engines: a request holds its slot for its prefill (a quarter of
        # the system prompt uncached, say) and its 6 decode chunks, in prefill-token time
        token_ms = a.block_cost_ms / block_tokens
        slot_ms = 6 * a.decode_ms + a.block_cost_ms * system_blocks / 4
        a.routing = {"cost": {"request_tokens": round(slot_ms / token_ms), "busy_tokens": 0}}
        a.profiles = [(label, [{"name": n, "weight": float(w)} for n, w in (x.split("=") for x in spec.split(","))]
                       if spec else None)
                      for label, _, spec in (p.partition(":") for p in a.profile or [""])]
        starts = {r: s for r, s in routers(engine_ports, a).items() if not a.only or r in a.only}
        order = list(starts)
        for rep in range(a.repeat):
            plan = schedule(a.rate, a.seconds, tenants, hot_share, a.seed + rep)
            for router in order[rep % len(order):] + order[: rep % len(order)]:  # rotate: no fixed position
                row = run_one(starts[router], router, engine_ports, plan, prompts, warm, a.seed + rep,
                              a.seconds + 30)
                if row is not None:
                    runs.setdefault(router, []).append(row)
    print(f"{'router (median of runs)':<24}{'hit rate':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'client p99':>12}"
          f"{'req/s':>7}{'failed':>8}")
    for router, rows in runs.items():
        def med(k: str, rows: list[Row] = rows) -> float:
            return statistics.median(r[k] for r in rows)
        print(f"{router:<24}{med('hit'):>9.1%}{med('p50') * 1000:>8.0f}ms{med('p99') * 1000:>8.0f}ms"
              f"{med('client_p99') * 1000:>10.0f}ms{med('rps'):>7.1f}{sum(r['failed'] for r in rows):>8.0f}")
    compare(runs, [label for label, _ in a.profiles])
    return runs


def ratio(runs: dict[str, list[Row]], a: str, b: str, key: str, diff: bool = False) -> float | None:
    """Median over repeats of a's `key` against b's in the same repeat (difference or ratio)."""
    pairs = list(zip(runs.get(a, []), runs.get(b, []), strict=False))
    if not pairs:
        return None
    return statistics.median(x[key] - y[key] if diff else x[key] / y[key] if y[key] else float("nan")
                             for x, y in pairs)


def compare(runs: dict[str, list[Row]], labels: list[str]) -> None:
    """The targets: 3 replicas match 1 (hit rate within 0.03, TTFT p99 within 10 %); precise >= approximate."""
    def line(what: str, a: str, b: str, targets: tuple[str, str] = ("", "")) -> None:
        d, r = ratio(runs, a, b, "hit", True), ratio(runs, a, b, "p99")
        if d is not None and r is not None:
            print(f"{what} (median over repeats): hit rate {d:+.3f}{targets[0]}, TTFT p99 ratio {r:.2f}{targets[1]}")

    for tag in (f" [{label}]" if label else "" for label in labels):
        for mode in ("precise", "approximate"):
            line(f"{mode}{tag}: 3 replicas vs 1", f"{mode} x3{tag}", f"{mode} x1{tag}",
                 (" (target >= -0.03)", " (target <= 1.10)"))
        for n in (1, 3):
            line(f"precise vs approximate{tag} ({n} replica{'s' * (n > 1)})", f"precise x{n}{tag}",
                 f"approximate x{n}{tag}", (" (target >= 0)", " (target <= 1.00)"))
            line(f"precise x{n}{tag} vs sglang cache_aware", f"precise x{n}{tag}", "sglang cache_aware")
    if len(labels) == 2:
        for mode in ("precise", "approximate"):
            for n in (1, 3):
                line(f"{mode} x{n}: [{labels[1]}] vs [{labels[0]}]", f"{mode} x{n} [{labels[1]}]",
                     f"{mode} x{n} [{labels[0]}]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", choices=("hot", "churn", "both"), default="both")
    ap.add_argument("--rate", type=float, default=25.0, help="requests per second offered")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of every router (each repeat its own seed)")
    ap.add_argument("--block-cost-ms", type=float, default=3.0, help="prefill time per uncached block")
    ap.add_argument("--decode-ms", type=float, default=15.0, help="time per generated chunk (6 chunks)")
    ap.add_argument("--concurrency", type=int, default=2, help="slots per engine")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scrape-s", type=float, default=1.0, help="our routers' engine scrape interval (load)")
    ap.add_argument("--profile", action="append", metavar="LABEL:SCORERS", help="run our routers with these "
                    "scorers, e.g. 'old:prefix=2,headroom=1,session=1' or 'default:' (the router's defaults); "
                    "repeat to compare profiles side by side (default: the router's defaults only)")
    ap.add_argument("--only", action="append", default=[], metavar="ROUTER", help="run only these, e.g. 'precise x3'")
    ap.add_argument("--no-peers", action="store_true", help="skip sglang-router")
    ap.add_argument("--verbose", action="store_true", help="print the slowest requests")
    ap.add_argument("--smoke", action="store_true", help="a few-second run on tiny sizes (the test suite runs it)")
    a = ap.parse_args()
    if a.smoke:
        a.rate, a.seconds, a.no_peers, a.workload, a.repeat = 20.0, 1.0, True, "churn", 1
    print(f"(machine load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for name in (("hot", "churn") if a.workload == "both" else (a.workload,)):
        run_workload(name, a)


if __name__ == "__main__":
    main()
    print(f"(machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
