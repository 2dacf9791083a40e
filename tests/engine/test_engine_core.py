"""Torch-free core: block manager (prefix cache, ref counts, eviction, collisions) and scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from supernode.api.hashing import block_hashes
from supernode.engine.core.block_manager import BlockManager
from supernode.engine.core.context import ContextLengthExceeded
from supernode.engine.core.scheduler import ScheduledSeq, Scheduler, SchedulerConfig
from supernode.engine.core.sequence import FinishReason, ReasoningControl, SamplingParams, Sequence, SequenceStatus

BS = 4
EOS = 999


@dataclass
class SeqBuilder:
    tokens: list[int] = field(default_factory=lambda: list(range(10)))
    max_tokens: int = 16
    reasoning: ReasoningControl | None = None

    def prompt(self, tokens: list[int]) -> SeqBuilder:
        self.tokens = list(tokens)
        return self

    def max(self, n: int) -> SeqBuilder:
        self.max_tokens = n
        return self

    def thinking(self, close_id: int, budget: int) -> SeqBuilder:
        self.reasoning = ReasoningControl(close_id, budget)
        return self

    def seq(self) -> Sequence:
        return Sequence(list(self.tokens), SamplingParams(max_tokens=self.max_tokens), self.reasoning)


def make_seq(tokens: list[int] | None = None) -> SeqBuilder:
    b = SeqBuilder()
    return b.prompt(tokens) if tokens is not None else b


def make_sched(blocks: int = 16, seqs: int = 8, tokens: int = 64, max_len: int = 256) -> Scheduler:
    return Scheduler(SchedulerConfig(seqs, tokens, max_len), BlockManager(blocks, BS, "m"))


def run_step(s: Scheduler, token: int = 7) -> list[ScheduledSeq]:
    batch = s.schedule()
    s.postprocess(batch, [token] * len(batch), [EOS])
    return batch


def run_prefill(bm: BlockManager, seq: Sequence) -> None:
    assert bm.admit(seq, len(seq))
    seq.num_computed_tokens = len(seq)
    bm.commit(seq)


# --- block manager ---------------------------------------------------------------------------------
def test_prefix_hit_reuses_blocks_and_counts_tokens() -> None:
    bm = BlockManager(16, BS, "m")
    a = make_seq(list(range(10))).seq()
    run_prefill(bm, a)
    b = make_seq([*range(8), 50, 51, 52]).seq()
    assert bm.admit(b, len(b))
    assert b.block_table[:2] == a.block_table[:2] and b.block_table[2] != a.block_table[2]
    assert b.num_cached_tokens == 8 and b.num_computed_tokens == 8
    assert bm.blocks[a.block_table[0]].ref_count == 2
    assert (bm.stats.queries, bm.stats.hits) == (21, 8)


def test_hashes_are_the_shared_router_hashes_and_emitted_as_events() -> None:
    bm = BlockManager(16, BS, "model-x")
    a = make_seq(list(range(9))).seq()
    run_prefill(bm, a)
    events = bm.drain_events()
    assert [e.type for e in events] == ["stored"]
    assert list(events[0].block_hashes) == block_hashes(list(range(9)), "model-x", BS)
    assert bm.drain_events() == []


def test_whole_prompt_cached_still_computes_last_token() -> None:
    bm = BlockManager(16, BS, "m")
    run_prefill(bm, make_seq(list(range(8))).seq())
    b = make_seq(list(range(8))).seq()
    assert bm.admit(b, 8)
    assert b.num_computed_tokens == 4  # the last block is recomputed to produce logits


def test_ref_counts_and_free_keep_cached_blocks_evictable() -> None:
    bm = BlockManager(4, BS, "m")
    a, b = make_seq(list(range(9))).seq(), make_seq(list(range(9))).seq()
    run_prefill(bm, a)
    run_prefill(bm, b)
    shared = a.block_table[0]
    assert bm.blocks[shared].ref_count == 2
    bm.free(a)
    assert bm.blocks[shared].ref_count == 1
    bm.free(b)
    assert bm.blocks[shared].ref_count == 0 and bm.num_free_blocks == 4 and bm.usage == 0.0
    c = make_seq(list(range(9))).seq()
    assert bm.admit(c, 9) and c.num_cached_tokens == 8  # still cached after free


def test_lru_eviction_emits_removed_and_prefers_oldest() -> None:
    bm = BlockManager(4, BS, "m")
    old = make_seq([1] * 5).seq()
    run_prefill(bm, old)  # 2 blocks: one full (hashed) + one partial
    bm.free(old)
    new = make_seq([2] * 5).seq()
    run_prefill(bm, new)
    bm.free(new)
    bm.drain_events()
    big = make_seq([3] * 15).seq()  # needs 4 blocks: evicts both cached ones
    assert bm.admit(big, 15)
    removed = [h for e in bm.drain_events() if e.type == "removed" for h in e.block_hashes]
    assert removed == [block_hashes([1] * 5, "m", BS)[0], block_hashes([2] * 5, "m", BS)[0]]
    assert bm.find_cached(make_seq([1] * 5).seq()) == []


def test_hash_collision_is_caught_by_comparing_tokens() -> None:
    bm = BlockManager(8, BS, "m")
    a = make_seq(list(range(9))).seq()
    run_prefill(bm, a)
    bm.blocks[a.block_table[0]].token_ids = (9, 9, 9, 9)  # same hash, different tokens
    assert bm.find_cached(make_seq(list(range(9))).seq()) == []


def test_admit_refuses_without_blocks_and_changes_nothing() -> None:
    bm = BlockManager(2, BS, "m")
    s = make_seq(list(range(12))).seq()
    assert not bm.admit(s, 12)
    assert s.block_table == [] and bm.num_free_blocks == 2


# --- scheduler -----------------------------------------------------------------------------------
def test_chunked_prefill_respects_token_budget() -> None:
    s = make_sched(tokens=8)
    seq = make_seq(list(range(20))).seq()
    s.add(seq)
    chunks = [b[0].num_tokens for b in (run_step(s), run_step(s), run_step(s))]
    assert chunks == [8, 8, 4]
    assert seq.num_output_tokens == 1  # sampled only after the last chunk


def test_decode_batching_and_max_num_seqs() -> None:
    s = make_sched(seqs=2)
    seqs = [make_seq([i, i + 1]).seq() for i in range(3)]
    for q in seqs:
        s.add(q)
    batch = run_step(s)
    assert [b.seq for b in batch] == seqs[:2] and len(s.waiting) == 1
    batch = run_step(s)
    assert all(b.num_tokens == 1 for b in batch)


def test_fairness_by_arrival_under_token_budget() -> None:
    s = make_sched(tokens=6)
    first, second = make_seq([1] * 5).seq(), make_seq([2] * 5).seq()
    s.add(first)
    s.add(second)
    batch = s.schedule()
    assert [(b.seq, b.num_tokens) for b in batch] == [(first, 5), (second, 1)]


def test_preemption_by_recompute_when_blocks_run_out() -> None:
    s = make_sched(blocks=5, tokens=64)  # each needs 3 blocks at the end (12 tokens); both together 6
    a, b = make_seq([1] * 7).max(5).seq(), make_seq([2] * 7).max(5).seq()
    s.add(a)
    s.add(b)
    run_step(s)  # prefill: each holds 2 blocks
    run_step(s)  # decode position 7: still 2 blocks, 9 tokens each
    run_step(s)  # position 8 needs a 3rd block each: b (newest) is preempted
    assert s.num_preemptions >= 1 and b.status is SequenceStatus.WAITING and s.waiting[0] is b
    assert a.status is SequenceStatus.RUNNING and b.block_table == [] and b.num_computed_tokens == 0
    for _ in range(40):
        if not s.has_work:
            break
        run_step(s)
    assert a.finish_reason is FinishReason.LENGTH and b.finish_reason is FinishReason.LENGTH
    assert a.num_output_tokens == b.num_output_tokens == 5 and s.blocks.usage == 0.0


def test_stop_token_finishes_and_frees() -> None:
    s = make_sched()
    seq = make_seq([1, 2, 3]).seq()
    s.add(seq)
    run_step(s, token=EOS)
    assert seq.finish_reason is FinishReason.STOP and seq.block_table == [] and not s.has_work


def test_abort_frees_blocks() -> None:
    s = make_sched()
    seq = make_seq(list(range(10))).seq()
    s.add(seq)
    run_step(s)
    assert s.blocks.usage > 0
    s.abort(seq)
    assert seq.finish_reason is FinishReason.ABORT and s.blocks.usage == 0 and not s.has_work


def test_context_limit_rejects_long_prompt_and_caps_generation() -> None:
    s = make_sched(max_len=8)
    with pytest.raises(ContextLengthExceeded, match="context is 8"):
        s.add(make_seq(list(range(8))).seq())
    seq = make_seq(list(range(6))).max(100).seq()
    s.add(seq)
    run_step(s)
    run_step(s)
    assert seq.finish_reason is FinishReason.LENGTH and len(seq) == 8


def test_reasoning_budget_forces_think_close() -> None:
    seq = make_seq([1]).thinking(close_id=50, budget=2).max(10).seq()
    for t in (5, 6, 7, 8):
        seq.append_token(seq.choose_token(t, [EOS]), [EOS])
    assert seq.output_token_ids == [5, 6, 50, 8] and seq.num_reasoning_tokens == 2


def test_eos_inside_reasoning_becomes_think_close() -> None:
    seq = make_seq([1]).thinking(close_id=50, budget=100).seq()
    seq.append_token(seq.choose_token(EOS, [EOS]), [EOS])
    assert seq.output_token_ids == [50] and seq.finish_reason is None
    seq.append_token(seq.choose_token(EOS, [EOS]), [EOS])
    assert seq.finish_reason is FinishReason.STOP


def test_sampling_params_validate() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)


def test_sequence_that_can_never_fit_is_finished_not_looped() -> None:
    s = make_sched(blocks=2)
    seq = make_seq(list(range(6))).max(50).seq()
    s.add(seq)
    for _ in range(20):
        if not s.has_work:
            break
        run_step(s)
    assert seq.finish_reason is FinishReason.LENGTH and not s.has_work and s.blocks.usage == 0.0
