"""DeepSeek-V4 through the engine loop: state slots, chunked prefill, preemption, boundary prefix caching."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from v4_checkpoints import make_reference

from supernode.engine.core.block_manager import KVEvent
from supernode.engine.core.sequence import SamplingParams, Sequence
from supernode.engine.core.state_blocks import StateBlockManager
from supernode.engine.kv_publisher import to_wire
from supernode.engine.llm_engine import EngineOptions, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.runner import EngineConfig, ModelRunner
from supernode.engine.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def v4_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("v4engine")
    make_reference(path)
    return path


async def generate(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
    handles = [engine.submit(p, params, streaming=False) for p in prompts]

    async def drain(h: Any) -> list[int]:
        ids: list[int] = []
        async for out in h:
            assert out.error is None, out.error
            ids += out.token_ids
        return ids

    return list(await asyncio.gather(*(drain(h) for h in handles)))


def make_engine(tokenizer: Tokenizer, model_dir: Path, blocks: int, **opts: Any) -> LLMEngine:
    runner = ModelRunner(
        EngineConfig(str(model_dir), num_kv_blocks=blocks, block_size=4, cpu_threads=1, max_num_seqs=4)
    )
    options = EngineOptions("v4", **{"max_num_seqs": 4, "max_model_len": 128, **opts})
    engine = LLMEngine(runner, tokenizer, options, EngineMetrics("v4"))
    engine.start()
    return engine


PROMPTS = [[(5 * i + 3 * j) % 120 + 5 for j in range(9 + 4 * i)] for i in range(4)]
PROMPTS.append([*PROMPTS[3][:19], 7, 7, 7])  # shares 19 tokens (two 8-token boundaries) with prompt 3


async def test_outputs_identical_with_preemption_chunking_and_prefix_cache(tokenizer: Tokenizer, v4_dir: Path) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    roomy = make_engine(tokenizer, v4_dir, blocks=128)
    try:
        assert isinstance(roomy.blocks, StateBlockManager) and roomy.blocks.boundary == 8
        expected = [(await generate(roomy, [p], params))[0] for p in PROMPTS]  # one at a time, cold
        assert roomy.blocks.stats.hits == 16  # prompt 4 resumed at the second boundary of prompt 3
    finally:
        roomy.stop()
    tight = make_engine(tokenizer, v4_dir, blocks=22, max_num_batched_tokens=8)
    events: list[KVEvent] = []
    try:
        got = await generate(tight, PROMPTS, params)
        assert tight.scheduler.num_preemptions > 0
        events += tight.blocks.drain_events()
        again = await generate(tight, PROMPTS[3:4], params)  # a prefix hit, resumed from a snapshot
        assert tight.blocks.stats.hits > 0
    finally:
        tight.stop()
    assert got == expected and again[0] == expected[3]


def test_blocks_register_only_up_to_a_snapshotted_boundary() -> None:
    bm = StateBlockManager(32, 4, "v4", seq_slots=2, snapshot_slots=2, boundary=8, interval=16)
    seq = Sequence(list(range(1, 22)))  # 21 tokens: the last boundary of the prompt is at 16
    assert bm.admit(seq, 12)
    slot, restore, saves = bm.state_args(seq, 0, 12)
    assert (restore, saves) == (-1, ()) and slot in (0, 1)
    seq.num_computed_tokens = 12
    bm.commit(seq)
    assert bm.cached_hashes() == [] and bm.drain_events() == []  # no snapshot yet: nothing reusable
    bm.append_slots(seq, 9)
    slot2, _, saves = bm.state_args(seq, 12, 9)
    assert slot2 == slot and len(saves) == 1 and saves[0][1] == 16 and saves[0][0] >= 2
    seq.num_computed_tokens = 21
    bm.commit(seq)
    (event,) = bm.drain_events()
    assert event.type == "stored" and len(event.block_hashes) == 4  # 16 tokens, not the 5th block
    assert event.ends == event.block_hashes[3:] == bm.reuse_ends()  # a reused prefix ends at 16, not 4, 8 or 12
    assert to_wire([KVEvent("stored", (), ends=event.ends)], 4) == []  # vLLM's format has no ends-only event
    bm.free(seq)
    twin = Sequence(list(range(1, 22)))
    assert bm.admit(twin, 21) and twin.num_computed_tokens == 16
    assert bm.state_args(twin, 16, 5)[1] == saves[0][0]  # resumes from the snapshot

