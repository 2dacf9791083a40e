"""Measured capacity end to end: two real fake engines of different decode speed behind the real router,
their declared weights wrong the other way round. The router learns each group's speed from its own
traffic, exports it as `supernode_router_endpoint_capacity`, and sends the fast group more of the load;
with measuring off (the control), the wrong declaration decides."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from fake_engine import Behaviour
from prometheus_client.parser import text_string_to_metric_families
from router_stack import MODEL, Stack, ep

FAST_S, SLOW_S = 0.01, 0.04  # seconds per generated word: the fast engine decodes 4x faster
WORDS = 8
CLIENTS, REQUESTS = 6, 96


async def drive(stack: Stack, url: str) -> Counter[str]:
    """CLIENTS closed-loop streaming clients, REQUESTS in all, distinct prompts: requests each engine served
    in the second half (once the router had samples)."""
    served: Counter[str] = Counter()
    counter = iter(range(REQUESTS))

    async def client(h: httpx.AsyncClient) -> None:
        for i in counter:
            body = {"model": MODEL, "stream": True, "max_tokens": 64,
                    "messages": [{"role": "user", "content": f"question {i} " * 8}]}
            async with h.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                async for _ in r.aiter_bytes():
                    pass
                if i >= REQUESTS // 2:
                    served[r.headers["x-supernode-endpoint"]] += 1

    async with httpx.AsyncClient(timeout=10) as h:
        await asyncio.gather(*(client(h) for _ in range(CLIENTS)))
    return served


async def capacities(stack: Stack) -> dict[str, float]:
    async with httpx.AsyncClient() as h:
        text = (await h.get(f"{stack.metrics_url}/metrics")).text
    return {s.labels["endpoint"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if f.name == "supernode_router_endpoint_capacity"}


async def fleet(stack: Stack, measure: bool) -> tuple[str, str, str]:
    fast = await stack.engine("fast", Behaviour(name="fast", decode_s=FAST_S, answer_words=WORDS, concurrency=8))
    slow = await stack.engine("slow", Behaviour(name="slow", decode_s=SLOW_S, answer_words=WORDS, concurrency=8))
    # Declared the wrong way round: the slow pool claims four times the fast one's throughput.
    stack.write_endpoints([ep(fast, capacityWeight=1.0, maxConcurrency=8, pool="fast"),
                           ep(slow, capacityWeight=4.0, maxConcurrency=8, pool="slow")])
    url = await stack.router({"routing": {"capacity": {"measure": measure, "min_samples": 5}}})
    return fast, slow, url


def share(served: Counter[str], stack: Stack, engine: str) -> int:
    port = stack.engine_urls[engine].rsplit(":", 1)[1]
    return sum(n for name, n in served.items() if name.startswith(f"engine-{port}/"))


async def test_traffic_follows_measured_speed_not_the_declared_weight(stack: Stack) -> None:
    fast, slow, url = await fleet(stack, measure=True)
    served = await drive(stack, url)
    caps = await capacities(stack)
    # The declared sum (5) shared out by measurement, in quarter-doubling steps: 4x the decode speed, less
    # the router's own time per request (more of it on a loaded machine).
    assert 4.0 <= caps[fast] + caps[slow] <= 6.0 and caps[fast] / caps[slow] >= 2.0, caps
    assert share(served, stack, "fast") > 3 * share(served, stack, "slow"), served  # seen: 40-41 vs 7-8
    table = stack.router_app.state.router.table  # type: ignore[union-attr]
    assert table.get(fast).throughput.samples + table.get(slow).throughput.samples == REQUESTS


async def test_control_without_measuring_the_declared_weight_decides(stack: Stack) -> None:
    fast, slow, url = await fleet(stack, measure=False)
    served = await drive(stack, url)
    caps = await capacities(stack)
    assert (caps[fast], caps[slow]) == (1.0, 4.0)
    assert share(served, stack, "fast") < 1.6 * share(served, stack, "slow"), served  # seen: 21-25 vs 23-27
