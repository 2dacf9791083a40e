"""Precise prefix routing end to end: two real built-in engine servers (fake runner, real block
manager, /v1/kv_events and /v1/tokenizer), the real router app with its tokenizer fetcher and KV
event feeds, the official OpenAI SDK. Prompts are token-id completions, so the test knows the blocks."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from polling import until

from supernode.api.hashing import block_hashes
from supernode.api.models import Mode
from supernode.engine.tokenizer import Tokenizer
from tests.engine.test_engine_http import MODEL, Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "router"))
from router_stack import router_over

from supernode.router.routing.prefix_index import request_hashes
from supernode.router.routing.state import RoutingRequest

BS = 4


@pytest.fixture
async def fleet(server_thread: Any, tokenizer: Tokenizer, fake_runner_factory: Any, tmp_path: Path,
                ) -> AsyncIterator[dict[str, Any]]:
    a = Stack(server_thread, tokenizer, fake_runner_factory(num_kv_blocks=16))
    b = Stack(server_thread, tokenizer, fake_runner_factory(num_kv_blocks=16, delay_s=0.05))  # b: slower steps
    with a, b:
        eps = [{"url": s.server.url, "model": MODEL, "deployment": name, "maxConcurrency": 4}
               for name, s in (("a", a), ("b", b))]
        async with router_over(tmp_path, eps) as (app, url):
            yield {"a": a, "b": b, "router": url, "state": app.state.router}


async def test_follow_up_lands_where_its_cache_is_and_an_evicted_prefix_routes_by_load(
    fleet: dict[str, Any],
) -> None:
    a, b, st = fleet["a"], fleet["b"], fleet["state"]
    index = st.profile.precise
    await until(lambda: index.is_precise(a.server.url) and index.is_precise(b.server.url)
                and st.tokens.get(MODEL) is not None)
    client = openai.AsyncOpenAI(base_url=fleet["router"] + "/v1", api_key="unused", max_retries=0)

    async def via_router(prompt: list[int]) -> tuple[str, int]:
        raw = await client.completions.with_raw_response.create(model=MODEL, prompt=prompt, max_tokens=1)
        usage = raw.parse().usage
        cached = usage.prompt_tokens_details.cached_tokens if usage and usage.prompt_tokens_details else 0
        return raw.headers["x-supernode-endpoint"], int(cached or 0)

    def pick_without_events(prompt: list[int]) -> str:
        """Where the router would send ``prompt`` knowing no engine's cache (its tie-break)."""
        text = " ".join(map(str, prompt))
        req = RoutingRequest("probe", MODEL, Mode.NON_THINK, request_hashes(MODEL, text, block_size=64,
                                                                            max_blocks=4096))
        decision = st.profile.pick(req, st.table)
        assert decision is not None
        return str(decision.endpoint.endpoint.deployment)

    # Turn 1 goes straight to b, behind the router's back: only b's KV events tell the router. The
    # conversation is one that the router, without them, would send to a.
    turn1 = next(p for p in (list(range(s, s + 20)) for s in range(100, 180))
                 if pick_without_events([*p, 7, 8, 9, 10]) == "a")
    hashes = block_hashes(turn1, MODEL, BS)
    b.client.post("/v1/completions", json={"model": MODEL, "prompt": turn1, "max_tokens": 1}).raise_for_status()
    await until(lambda: index.match(b.server.url, hashes) == 5)
    # what the index holds per endpoint is exported (as of the last health probe)
    exported = st.metrics.prefix_index_blocks.labels(b.server.url)
    await until(lambda: exported._value.get() == index.size(b.server.url) >= 5)
    endpoint, cached = await via_router([*turn1, 7, 8, 9, 10])  # the follow-up turn
    assert endpoint == "b/0" and cached == 20  # all five blocks of turn 1

    # b evicts the conversation (other prompts fill its 16 blocks); its events say so.
    for start in (200, 240, 280):
        b.client.post("/v1/completions", json={"model": MODEL, "prompt": list(range(start, start + 36)),
                                               "max_tokens": 1}).raise_for_status()
    await until(lambda: index.match(b.server.url, hashes) == 0)
    # b is busy with a direct request; with no cache anywhere the conversation goes by load, to a.
    slow = threading.Thread(target=lambda: httpx.post(  # 24 steps of b's 50 ms: busy for over a second
        b.server.url + "/v1/completions", json={"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 24,
                                                "ignore_eos": True}, timeout=30))
    slow.start()
    try:
        await until(lambda: st.table.get(b.server.url).load >= 1)
        endpoint, cached = await via_router([*turn1, 7, 8, 9, 10, 11])
        assert endpoint == "a/0" and cached == 0  # (the approximate index would have said b: it sent it there)
    finally:
        await asyncio.to_thread(slow.join, 30)
    assert st.metrics.prefix_index_mode.labels(b.server.url, "precise")._value.get() == 1.0
