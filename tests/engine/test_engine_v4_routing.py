"""Contract: for DeepSeek-V4 the router's precise index predicts exactly the prefix the engine reuses.

The engine resumes a V4 prefix only at a block carrying a state snapshot (state_blocks.py), though the
blocks between snapshots are cached and announced too. Real pieces: the tiny V4 checkpoint through the
real ModelRunner and engine HTTP app (/v1/kv_events, /v1/tokenizer), the real router app with its
tokenizer fetcher and KV event feed. Each probe's shared prefix with what is cached ends mid-interval;
the router's predicted hit (before the request) must equal the engine's ``cached_tokens`` (after it).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from polling import until

pytest.importorskip("transformers")

from v4_checkpoints import make_reference

from supernode.engine.core.state_blocks import StateBlockManager
from supernode.engine.runner import EngineConfig, ModelRunner
from supernode.engine.tokenizer import Tokenizer
from tests.engine.test_engine_http import MODEL, Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "router"))
from router_stack import router_over

BS, BOUNDARY = 4, 8  # the tiny checkpoint: 4-token blocks, compression windows of 4 and 8


@pytest.fixture
async def v4_fleet(server_thread: Any, tokenizer: Tokenizer, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    make_reference(tmp_path / "v4")
    runner = ModelRunner(EngineConfig(str(tmp_path / "v4"), num_kv_blocks=96, block_size=BS, cpu_threads=1,
                                      max_num_seqs=4))
    with Stack(server_thread, tokenizer, runner, max_num_seqs=4, max_model_len=128) as engine:
        eps = [{"url": engine.server.url, "model": MODEL, "deployment": "v4", "maxConcurrency": 4}]
        async with router_over(tmp_path, eps) as (app, url):
            yield {"engine": engine, "router": url, "state": app.state.router, "tmp": tmp_path, "endpoints": eps}


def diverged(shared: list[int], length: int) -> list[int]:
    return [*shared, *[(3 * j) % 7 + 121 for j in range(length - len(shared))]]  # ids no base prompt uses


async def test_router_predicts_the_prefix_a_v4_engine_reuses(v4_fleet: dict[str, Any]) -> None:
    engine, st = v4_fleet["engine"], v4_fleet["state"]
    url, index = engine.server.url, st.profile.precise
    blocks = engine.engine.blocks
    assert isinstance(blocks, StateBlockManager) and (blocks.boundary, blocks.interval) == (BOUNDARY, 144)
    await until(lambda: index.is_precise(url) and st.tokens.get(MODEL) is not None)
    assert index.is_restricted(url)
    tok = st.tokens.get(MODEL)
    client = openai.AsyncOpenAI(base_url=v4_fleet["router"] + "/v1", api_key="unused", max_retries=0)

    async def turn(prompt: list[int]) -> tuple[int, int]:
        """(the router's predicted hit before the request, the engine's reused prefix), in tokens."""
        predicted = index.match(url, tok.hashes(prompt, 4096)) * BS
        resp = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
        assert resp.usage is not None and resp.usage.prompt_tokens_details is not None
        cached = int(resp.usage.prompt_tokens_details.cached_tokens or 0)
        # Its snapshot at the prompt's last boundary (new or already there) reaches the router before the next.
        last_boundary = (len(prompt) - 1) // BOUNDARY * BOUNDARY
        await until(lambda: index.match(url, tok.hashes(prompt, 4096)) * BS == last_boundary)
        return predicted, cached

    a = [(7 * j) % 113 + 5 for j in range(30)]  # cached with a snapshot at 24 (blocks 0-5 announced)
    assert await turn(a) == (0, 0)
    c = diverged(a[:26], 34)  # past a's snapshot: resumes at 24; then its own snapshot at 32
    e = diverged(c[:30], 40)  # leading cached blocks reach 28 (c's block 6), the last snapshot is at 24
    cases = {"shares 21 of a (blocks to 20, no snapshot before 24)": (diverged(a[:21], 30), 0),
             "shares 13 of a": (diverged(a[:13], 22), 0), "shares 26 of a": (c, 24), "shares 30 of c": (e, 24)}
    for name, (prompt, reused) in cases.items():
        assert await turn(prompt) == (reused, reused), name
    assert blocks.stats.hits == 48  # c and e: what the engine counted matches what the router said

    # A router starting now learns the same from the stream's first event, a snapshot naming the ends.
    async with router_over(v4_fleet["tmp"], v4_fleet["endpoints"]) as (late, _):
        st2 = late.state.router
        await until(lambda: st2.profile.precise.is_precise(url) and st2.tokens.get(MODEL) is not None)
        probes = [a, *(p for p, _ in cases.values()), diverged(c[:33], 40), diverged(e[:29], 40)]
        late_view = [st2.profile.precise.match(url, tok.hashes(p, 4096)) for p in probes]
        assert late_view == [index.match(url, tok.hashes(p, 4096)) for p in probes]
        assert late_view == [6, 6, 4, 8, 8, 8, 6]  # (each probe is cached to its last boundary now; the last
        # runs through c's block 6 to 28 tokens and ends at a's snapshot at 24)
