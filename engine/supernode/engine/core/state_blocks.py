"""Block manager for models that carry per-sequence state beside their paged KV (DeepSeek-V4).

V4 keeps compressed KV entries in paged blocks (shared through the prefix cache as usual) but the
sliding-window ring and the compressors' unfinished windows live in a per-sequence *state slot*. So:

- every running sequence holds one state slot (there are exactly ``max_num_seqs``);
- a prefix is reusable only at a *boundary* — a multiple of the block size and of every compression
  window, where no window is half-pooled — and only where a *snapshot* of the state was taken. While
  prefilling, a sequence snapshots its state at the last boundary of its prompt; the blocks up to that
  boundary are then registered in the prefix cache (and announced in a "stored" KV event). Blocks past
  the last snapshotted boundary stay private, so the router's prefix index only sees reusable prefixes;
- a snapshot lives as long as the cached block that ends at its boundary.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from supernode.engine.core.block_manager import BlockManager, KVEvent
from supernode.engine.core.sequence import Sequence


@dataclass(slots=True)
class StateBlockManager(BlockManager):
    seq_slots: int = 1
    snapshot_slots: int = 0
    boundary: int = 1  # tokens; a multiple of block_size
    _free_slots: deque[int] = field(init=False)
    _free_snaps: deque[int] = field(init=False)
    _slot: dict[int, int] = field(init=False, default_factory=dict)  # seq_id -> state slot
    _restore: dict[int, int] = field(init=False, default_factory=dict)  # seq_id -> snapshot to resume from
    _saving: dict[int, tuple[int, int]] = field(init=False, default_factory=dict)  # seq_id -> (snapshot, pos)
    _limit: dict[int, int] = field(init=False, default_factory=dict)  # seq_id -> blocks it may register
    _snap_of_block: dict[int, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        BlockManager.__post_init__(self)
        if self.boundary < 1 or self.boundary % self.block_size:
            raise ValueError(f"boundary {self.boundary} must be a positive multiple of block_size")
        self._free_slots = deque(range(self.seq_slots))
        self._free_snaps = deque(range(self.seq_slots, self.seq_slots + self.snapshot_slots))

    def find_cached(self, seq: Sequence) -> list[int]:
        """Cached leading blocks, cut back to the last boundary that has a state snapshot."""
        hits = BlockManager.find_cached(self, seq)
        per = self.boundary // self.block_size
        k = len(hits) - len(hits) % per
        while k > 0 and hits[k - 1] not in self._snap_of_block:
            k -= per
        return hits[:k]

    def admit(self, seq: Sequence, num_new_tokens: int) -> bool:
        if not self._free_slots or not BlockManager.admit(self, seq, num_new_tokens):
            return False
        self._slot[seq.seq_id] = self._free_slots.popleft()
        self._limit[seq.seq_id] = seq.num_hashed_blocks
        if seq.num_hashed_blocks:
            self._restore[seq.seq_id] = self._snap_of_block[seq.block_table[seq.num_hashed_blocks - 1]]
        return True

    def state_args(self, seq: Sequence, start: int, num_tokens: int) -> tuple[int, int, tuple[int, int] | None]:
        sid = seq.seq_id
        restore = self._restore.pop(sid, -1)
        save = None
        target = (seq.num_prompt_tokens - 1) // self.boundary * self.boundary
        if start < target <= start + num_tokens and sid not in self._saving:
            snap = self._free_snaps.popleft() if self._free_snaps else self._reclaim_snapshot()
            if snap is not None:
                save = (snap, target)
                self._saving[sid] = save
        return self._slot[sid], restore, save

    def commit(self, seq: Sequence) -> None:
        sid = seq.seq_id
        saving = self._saving.get(sid)
        if saving is not None and seq.num_computed_tokens >= saving[1]:
            self._limit[sid] = saving[1] // self.block_size
        limit = self._limit.get(sid, seq.num_hashed_blocks)
        computed = seq.num_computed_tokens
        seq.num_computed_tokens = min(computed, limit * self.block_size)
        try:
            BlockManager.commit(self, seq)
        finally:
            seq.num_computed_tokens = computed
        if saving is not None and seq.num_hashed_blocks * self.block_size >= saving[1]:
            del self._saving[sid]
            end_block = seq.block_table[saving[1] // self.block_size - 1]
            if self.blocks[end_block].hash is not None and end_block not in self._snap_of_block:
                self._snap_of_block[end_block] = saving[0]
            else:  # an identical prefix was cached (with its own snapshot) first
                self._free_snaps.append(saving[0])

    def free(self, seq: Sequence) -> None:
        sid = seq.seq_id
        if (slot := self._slot.pop(sid, None)) is not None:
            self._free_slots.append(slot)
        if (saving := self._saving.pop(sid, None)) is not None:
            self._free_snaps.append(saving[0])
        self._restore.pop(sid, None)
        self._limit.pop(sid, None)
        BlockManager.free(self, seq)

    def _reclaim_snapshot(self) -> int | None:
        """Take the snapshot of the least recently used unreferenced boundary block (uncaching that block)."""
        for bid in self._evictable:
            if bid in self._snap_of_block:
                block = self.blocks[bid]
                assert block.hash is not None
                del self._by_hash[block.hash]
                self.events.append(KVEvent("removed", (block.hash,)))
                block.hash, block.token_ids = None, ()
                del self._evictable[bid]
                self._free.append(bid)
                return self._snap_of_block.pop(bid)
        return None

    def _evicted(self, bid: int) -> None:
        if (snap := self._snap_of_block.pop(bid, None)) is not None:
            self._free_snaps.append(snap)


def make_block_manager(runner: Any, model_name: str, max_num_seqs: int) -> BlockManager:
    """The block manager a runner's model needs: plain paged blocks, or with state slots (V4)."""
    slots = getattr(runner, "state_slots", (0, 0))
    if not slots[0]:
        return BlockManager(runner.num_kv_blocks, runner.block_size, model_name)
    if max_num_seqs > slots[0]:
        raise ValueError(f"max_num_seqs: {max_num_seqs} exceeds the runner's {slots[0]} state slots")
    return StateBlockManager(
        runner.num_kv_blocks,
        runner.block_size,
        model_name,
        seq_slots=slots[0],
        snapshot_slots=slots[1],
        boundary=runner.prefix_boundary,
    )
