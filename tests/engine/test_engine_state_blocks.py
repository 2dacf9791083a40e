"""The V4 block manager's prefix cache without a model: what is cached can always be resumed from, and a
prefix whose snapshot goes leaves the cache (and the router's index) with it."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from supernode.engine.core.sequence import Sequence
from supernode.engine.core.state_blocks import StateBlockManager


def prefill(bm: StateBlockManager, tokens: list[int]) -> Sequence:
    """One whole prompt through admit → state_args → commit, then freed (its cached blocks stay)."""
    seq = Sequence(tokens)
    assert bm.admit(seq, len(tokens))
    bm.state_args(seq, seq.num_computed_tokens, len(tokens) - seq.num_computed_tokens)
    seq.num_computed_tokens = len(tokens)
    bm.commit(seq)
    bm.free(seq)
    return seq


def test_evicting_a_prefixs_snapshot_uncaches_the_blocks_nothing_can_resume_from() -> None:
    """Blocks are freed newest first, so LRU eviction takes a prefix's snapshotted last block first. The
    blocks before it cannot be resumed from any more (no snapshot, nothing cached after them): they
    leave the cache too, and say so, or the router keeps counting them for this engine."""
    bm = StateBlockManager(12, 4, "v4", seq_slots=2, snapshot_slots=4, boundary=8, interval=16)
    a = prefill(bm, list(range(1, 18)))  # 17 tokens: 4 blocks cached, the snapshot at 16
    b = prefill(bm, [*range(1, 9), *range(50, 59)])  # shares a's first 2 blocks; caches its blocks 3 and 4
    a_hashes, b_hashes = a.block_hashes[:4], b.block_hashes[:4]
    assert set(bm.cached_hashes()) == {*a_hashes, *b_hashes[2:]}
    bm.drain_events()

    filler = Sequence(list(range(200, 228)))  # 7 blocks: the 6 free ones and the least recently used
    assert bm.admit(filler, 28)
    removed = {h for ev in bm.drain_events() if ev.type == "removed" for h in ev.block_hashes}
    assert removed == {a_hashes[3], a_hashes[2]}  # a's tail and its orphan; the shared blocks lead on to b's
    assert set(bm.cached_hashes()) == {*a_hashes[:2], *b_hashes[2:]}
    bm.free(filler)
    twin = Sequence(list(b.token_ids))
    assert bm.admit(twin, len(twin)) and twin.num_computed_tokens == 16  # b still resumes from its snapshot


def check_invariants(bm: StateBlockManager) -> None:
    cached = {bid for bid in bm._by_hash.values()}
    assert all(bm.blocks[b].hash is not None for b in cached)
    for bid in cached:  # every cached block can be resumed from, or leads to one that can
        assert bid in bm._snap_of_block or bm._kids.get(bid), f"block {bid}: cached but nothing can resume from it"
    for kid, parent in bm._parent.items():
        assert kid in cached and parent in cached and kid in bm._kids[parent]
    assert set(bm._snap_of_block) <= cached
    assert len(bm._snap_of_block) + len(bm._free_snaps) == bm.snapshot_slots  # no snapshot leaks
    assert len(bm._free) + len(bm._evictable) == bm.num_blocks  # nothing held between requests


PREFIXES = [list(range(1, 25)), list(range(100, 124)), [*range(1, 9), *range(60, 76)]]  # the third shares 8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 24), st.integers(0, 3)), min_size=1, max_size=25))
# a prefix's first block evicted while the blocks after it stay (they lead to snapshots), then cached again:
# it must link to them, or it is cached with nothing to resume from
@example(ops=[(0, 4, 0), (0, 20, 0), (1, 12, 0), (0, 12, 0)])
def test_what_is_cached_can_always_be_resumed_from(ops: list[tuple[int, int, int]]) -> None:
    """Random prompts that share prefixes, through a cache too small for them (evictions and snapshot
    reclaims): after each, every cached block has a snapshot or a cached block after it, and the
    links and snapshot slots add up."""
    bm = StateBlockManager(14, 4, "v4", seq_slots=1, snapshot_slots=3, boundary=8, interval=16)
    for prefix, cut, tail in ops:
        prefill(bm, [*PREFIXES[prefix][:cut], *range(200 + tail * 10, 200 + tail * 10 + 5)])
        check_invariants(bm)
