"""Router benchmark 2: routing quality on a simulated fleet with a hot tenant.

Fleet: 8 fake engines on 127.0.0.1 (tests/router/fake_engine.py, one process), each with a real LRU
prefix cache of N blocks (64 bytes of rendered prompt per block), prefill time proportional to the
uncached blocks, `concurrency` slots per engine (requests beyond wait) and a fixed decode time.

Workload (open loop, Poisson arrivals, same seeded schedule for every router): T tenants, each with its
own long system prompt; multi-turn chats (a conversation's next turn carries the whole history); one
hot tenant sends `hot_share` of all traffic, more than one engine can serve. Measured per router:
engine-side prefix-cache hit rate, TTFT p50/p99 (first streamed byte), completed req/s.

Routers: ours (default profile), round robin (sglang-router --policy round_robin) and
sglang-router --policy cache_aware (default thresholds).

    python benchmarks/router_routing_quality.py [--rate 40] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import MODEL, Procs, free_ports, pct

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "router"))
from fake_engine import BLOCK

ENGINES = 8
VERBOSE = "--verbose" in sys.argv


@dataclass
class Conversation:
    tenant: int
    session: str
    messages: list[dict[str, str]] = field(default_factory=list)
    busy: bool = False


def system_prompt(t: int, blocks: int) -> str:
    rnd = random.Random(t)
    words = " ".join(f"rule{rnd.randrange(10**6)}" for _ in range(blocks * BLOCK // 10))
    return f"You are tenant {t}'s assistant. {words}"[: blocks * BLOCK]


def schedule(rate: float, seconds: float, tenants: int, hot_share: float, seed: int) -> list[tuple[float, int]]:
    rnd = random.Random(seed)
    t, out = 0.0, []
    while t < seconds:
        t += rnd.expovariate(rate)
        tenant = 0 if rnd.random() < hot_share else rnd.randrange(1, tenants)
        out.append((t, tenant))
    return out


async def run_load(url: str, plan: list[tuple[float, int]], prompts: list[str], seed: int,
                   drain_s: float) -> tuple[list[float], int, int, float]:
    rnd = random.Random(seed)
    convs: dict[int, list[Conversation]] = {}
    ttfts: list[float] = []
    ok = failed = 0
    trace: list[tuple[float, float, int, str, int]] = []
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one(conv: Conversation, text: str) -> None:
            nonlocal ok, failed
            conv.messages.append({"role": "user", "content": text})
            body = {"model": MODEL, "stream": True, "max_tokens": 16, "user": conv.session,
                    "messages": [{"role": "system", "content": prompts[conv.tenant]}, *conv.messages]}
            t0 = time.perf_counter()
            first = None
            try:
                async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                    async for _ in r.aiter_bytes():
                        if first is None:
                            first = time.perf_counter() - t0
                            trace.append((first, time.perf_counter() - start, conv.tenant,
                                          r.headers.get("x-supernode-endpoint", "?")[-5:], len(conv.messages)))
                    if r.status_code != 200:
                        raise httpx.HTTPError(f"status {r.status_code}")
                ok += 1
                if first is not None:
                    ttfts.append(first)
                conv.messages.append({"role": "assistant", "content": f"answer to {text}"})
            except httpx.HTTPError:
                failed += 1
            finally:
                conv.busy = False

        start = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for i, (at, tenant) in enumerate(plan):
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pool = [c for c in convs.setdefault(tenant, []) if not c.busy and len(c.messages) < 10]
            if pool and rnd.random() < 0.7:
                conv = rnd.choice(pool)
            else:
                conv = Conversation(tenant, f"t{tenant}-c{i}")
                convs[tenant].append(conv)
            conv.busy = True
            tasks.append(asyncio.create_task(one(conv, f"question {i} about topic {rnd.randrange(1000)}")))
        await asyncio.wait(tasks, timeout=drain_s)
        elapsed = time.perf_counter() - start
        for t in tasks:
            t.cancel()
    if VERBOSE:
        trace.sort(reverse=True)
        for row in trace[:12]:
            print(f"  slow: ttft {row[0] * 1000:.0f}ms at t={row[1]:.1f}s tenant {row[2]} endpoint {row[3]} "
                  f"turn {row[4]}")
    return ttfts, ok, failed, elapsed


async def engine_hits(ports: list[int], reset: bool) -> tuple[float, float]:
    hit = total = 0.0
    async with httpx.AsyncClient(timeout=5) as c:
        for p in ports:
            if reset:
                await c.post(f"http://127.0.0.1:{p}/reset")
                continue
            for line in (await c.get(f"http://127.0.0.1:{p}/metrics")).text.splitlines():
                if line.startswith("fake:prefix_hit_blocks_total"):
                    hit += float(line.split()[-1])
                elif line.startswith("fake:prefix_blocks_total"):
                    total += float(line.split()[-1])
    return hit, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second offered")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--tenants", type=int, default=24)
    ap.add_argument("--hot-share", type=float, default=0.5)
    ap.add_argument("--system-blocks", type=int, default=48, help="system prompt length in 64-byte blocks")
    ap.add_argument("--cache-blocks", type=int, default=600, help="LRU capacity per engine")
    ap.add_argument("--block-cost-ms", type=float, default=3.0, help="prefill time per uncached block")
    ap.add_argument("--decode-ms", type=float, default=15.0, help="time per generated chunk (6 chunks)")
    ap.add_argument("--concurrency", type=int, default=2, help="slots per engine")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ours", action="append", default=[], metavar="JSON",
                    help="extra runs of our router with this config merged in, e.g. '{\"routing\": {...}}'")
    ap.add_argument("--no-peers", action="store_true", help="skip sglang-router")
    ap.add_argument("--verbose", action="store_true", help="print the slowest requests")
    ap.add_argument("--smoke", action="store_true", help="a few-second run on tiny sizes (the test suite runs it)")
    a = ap.parse_args()
    if a.smoke:
        a.rate, a.seconds, a.tenants, a.no_peers = 20.0, 1.0, 4, True
    ports = free_ports(ENGINES + 3 + len(a.ours))
    engine_ports, (ours, rr, ca), variant_ports = ports[:ENGINES], ports[ENGINES:ENGINES + 3], ports[ENGINES + 3:]
    plan = schedule(a.rate, a.seconds, a.tenants, a.hot_share, a.seed)
    prompts = [system_prompt(t, a.system_blocks) for t in range(a.tenants)]
    per_engine = a.concurrency / (6 * a.decode_ms / 1000)
    print(f"fleet: {ENGINES} engines x {a.concurrency} slots, cache {a.cache_blocks} blocks, prefill "
          f"{a.block_cost_ms:g} ms/uncached block, decode {6 * a.decode_ms:g} ms; one engine serves at most "
          f"~{per_engine:.0f} req/s fully cached")
    print(f"load: {len(plan)} requests over {a.seconds:g}s ({a.rate:g}/s), {a.tenants} tenants, hot tenant "
          f"{a.hot_share:.0%} = {a.rate * a.hot_share:.0f} req/s, system prompt {a.system_blocks} blocks")
    rows = {}
    with Procs() as procs:
        procs.engines(engine_ports, "--cache-blocks", str(a.cache_blocks), "--block-cost-ms", str(a.block_cost_ms),
                      "--decode-ms", str(a.decode_ms), "--concurrency", str(a.concurrency), "--answer-words", "6")
        targets: dict[str, str] = {}
        # the endpoint file states each engine's slots, as the local runtime / operator do
        targets["supernode"] = procs.our_router(ours, engine_ports, max_concurrency=a.concurrency)
        for i, (extra, port) in enumerate(zip(a.ours, variant_ports, strict=True)):
            targets[f"supernode v{i + 1}"] = procs.our_router(port, engine_ports, max_concurrency=a.concurrency,
                                                             extra=json.loads(extra), name=f"router-v{i + 1}")
            print(f"supernode v{i + 1}: {extra}")
        peers = () if a.no_peers else (("round-robin", rr, "round_robin"), ("sglang cache_aware", ca, "cache_aware"))
        for name, port, policy in peers:
            try:
                targets[name] = procs.sglang_router(port, engine_ports, policy)
            except (RuntimeError, TimeoutError) as e:
                print(f"{name}: could not run sglang-router ({e})")
        # 2 s of unmeasured traffic per router (other prompts, so no router starts with a useful index)
        warm = [(i * 0.02, i % a.tenants) for i in range(20 if a.smoke else 100)]
        warm_prompts = [system_prompt(1000 + t, a.system_blocks) for t in range(a.tenants)]
        for name, url in targets.items():
            asyncio.run(run_load(url, warm, warm_prompts, a.seed + 1, drain_s=10))
            asyncio.run(engine_hits(engine_ports, reset=True))
            ttfts, ok, failed, elapsed = asyncio.run(run_load(url, plan, prompts, a.seed, drain_s=a.seconds + 30))
            hit, total = asyncio.run(engine_hits(engine_ports, reset=False))
            rows[name] = (hit / total if total else 0.0, pct(ttfts, 50), pct(ttfts, 99), ok / elapsed, ok, failed)
    print(f"\n{'router':<20}{'hit rate':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'req/s':>8}{'done':>6}{'failed':>8}")
    for name, (hr, p50, p99, rps, ok, failed) in rows.items():
        print(f"{name:<20}{hr:>9.1%}{p50 * 1000:>8.0f}ms{p99 * 1000:>8.0f}ms{rps:>8.1f}{ok:>6}{failed:>8}")


if __name__ == "__main__":
    main()
    print(f"(machine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
