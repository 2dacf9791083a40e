"""The engine loop with a fake KV-reading runner: preemption and prefix caching never change the output."""

from __future__ import annotations

import asyncio
from typing import Any

from supernode.engine.core.sequence import SamplingParams
from supernode.engine.llm_engine import EngineOptions, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.tokenizer import Tokenizer


async def generate(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
    handles = [engine.submit(p, params, streaming=False) for p in prompts]

    async def drain(h: Any) -> list[int]:
        ids: list[int] = []
        async for out in h:
            assert out.error is None
            ids += out.token_ids
        return ids

    return list(await asyncio.gather(*(drain(h) for h in handles)))


def make_engine(tokenizer: Tokenizer, runner: Any, **opts: Any) -> LLMEngine:
    options = EngineOptions("m", **{"max_num_seqs": 8, "max_model_len": 128, **opts})
    engine = LLMEngine(runner, tokenizer, options, EngineMetrics("m"))
    engine.start()
    return engine


async def test_outputs_identical_with_preemption_chunking_and_cache(
    tokenizer: Tokenizer, fake_runner_factory: Any
) -> None:
    prompts = [[(7 * i + j) % 300 + 10 for j in range(6 + 3 * i)] for i in range(6)]
    prompts.append(prompts[0] + [11, 12, 13, 14, 15])  # shares a prefix with the first
    params = SamplingParams(max_tokens=20, temperature=0.8, seed=3, ignore_eos=True)
    roomy = make_engine(tokenizer, fake_runner_factory(num_kv_blocks=256))
    try:
        # one at a time: no batching, no preemption
        expected = [(await generate(roomy, [p], params))[0] for p in prompts]
    finally:
        roomy.stop()
    tight_runner = fake_runner_factory(num_kv_blocks=14)  # 56 token slots for 7 requests of up to 44 tokens
    tight = make_engine(tokenizer, tight_runner, max_num_batched_tokens=8)
    try:
        got = await generate(tight, prompts, params)
        assert tight.scheduler.num_preemptions > 0  # the point of this test
        again = await generate(tight, prompts[:1], params)  # served partly from the prefix cache
        assert tight.blocks.stats.hits > 0
    finally:
        tight.stop()
    assert got == expected and again[0] == expected[0]
    assert all(len(ids) == 20 for ids in got)


async def test_a_context_larger_than_the_kv_cache_is_warned_about_and_its_long_prompts_end_empty(
    tokenizer: Tokenizer, fake_runner_factory: Any, caplog: Any
) -> None:
    """`serve` caps the context at the cache; an embedder that does not is told, since a prompt the cache
    can never hold ends at once without the model running (what the earlier gated-runner test tripped on)."""
    runner = fake_runner_factory(num_kv_blocks=8, block_size=4)  # 32 tokens
    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if "exceeds the KV cache" in r.getMessage()]

    LLMEngine(runner, tokenizer, EngineOptions("m", 32), EngineMetrics("m"))
    assert warned() == []
    engine = LLMEngine(runner, tokenizer, EngineOptions("m", 64), EngineMetrics("m"))
    assert warned() == ["max_model_len 64 exceeds the KV cache's 32 tokens: longer prompts finish at once with "
                        "no output"]
    engine.start()
    try:
        handle = engine.submit(list(range(5, 45)), SamplingParams(max_tokens=4), streaming=False)
        outs = [out async for out in handle]
    finally:
        engine.stop()
    assert outs[-1].finish_reason == "length" and not [t for o in outs for t in o.token_ids] and runner.steps == 0
