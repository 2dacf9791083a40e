"""The routing-quality benchmark's load: multi-turn chats per tenant on a seeded open-loop schedule,
sent round-robin over one or more router replicas, and the engines' prefix-cache counters."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from router_bench_common import MODEL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "router"))
from fake_engine import BLOCK

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


async def run_load(urls: list[str], plan: list[tuple[float, int]], prompts: list[str], seed: int,
                   drain_s: float) -> tuple[list[float], int, int, float]:
    rnd = random.Random(seed)
    turn = iter(range(10**9))

    def next_url() -> int:
        return next(turn) % len(urls)

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
                url = urls[next_url()]  # a round-robin front over the router replicas
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


async def engine_hits(ports: list[int], reset: bool) -> tuple[float, float, list[float]]:
    """(cached blocks, prompt blocks, modelled TTFTs) over the engines since their last reset."""
    hit = total = 0.0
    ttfts: list[float] = []
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
            ttfts += (await c.get(f"http://127.0.0.1:{p}/ttfts")).json()["ttfts"]
    return hit, total, ttfts


def tokenizer_for(prompts: list[str], path: Path) -> int:
    """Trains the engines' tokenizer on the workload's text into ``path``; tokens per cache block such
    that a block still covers about BLOCK bytes of prompt (so cache sizes keep their meaning)."""
    from fake_sim import build_tokenizer_json

    from supernode.api.prompttokens import PromptTokenizer

    corpus = [*prompts, *(f"question {i} about topic {i % 1000} answer to" for i in range(2000))]
    text = build_tokenizer_json(corpus)
    path.write_text(text)
    tok = PromptTokenizer.from_str(text)
    sample = prompts[: min(8, len(prompts))]
    per_token = sum(len(p.encode()) for p in sample) / max(1, sum(len(tok.encode_text(p)) for p in sample))
    return max(1, round(BLOCK / per_token))
