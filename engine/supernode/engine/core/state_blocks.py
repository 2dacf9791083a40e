"""Block manager for models that carry per-sequence state beside their paged KV (DeepSeek-V4).

V4 keeps compressed KV entries in paged blocks (shared through the prefix cache as usual) but the
sliding-window ring and the compressors' unfinished windows live in a per-sequence *state slot*. So:

- every running sequence holds one state slot (there are exactly ``max_num_seqs``);
- a prefix is reusable only at a *boundary* — a multiple of the block size and of every compression
  window, where no window is half-pooled — and only where a *snapshot* of the state was taken. While
  prefilling, a sequence snapshots its state every ``interval`` tokens (the model picks it so snapshots
  cost no more than the compressed KV they cover) and at the last boundary of its prompt (the next turn
  of a conversation resumes there). The blocks up to a snapshot are then registered in the prefix cache
  (and announced in a "stored" KV event); blocks past the last snapshot stay private. The blocks between
  two snapshots are cached too (a longer prefix runs through them) but a reused prefix cannot end there:
  KV events name the blocks that carry a snapshot (``ends``), so the router's prefix index counts a hit
  only up to the last of them, as ``find_cached`` does;
- a snapshot lives as long as the cached block that ends at its boundary; when the snapshot pool runs
  dry, the least recently used unreferenced snapshotted block is uncached to free one;
- when a block leaves the cache, the unreferenced blocks before it that are left with neither a
  snapshot nor a cached block after them leave too (a "removed" event): nothing can resume from them,
  so the router's index must not count them. (Blocks are freed newest first, so LRU eviction takes a
  prefix's snapshotted last block first; its predecessors would otherwise linger in the index.)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from supernode.engine.core.block_manager import BlockManager, KVEvent
from supernode.engine.core.sequence import Sequence


@dataclass(slots=True)
class StateBlockManager(BlockManager):
    seq_slots: int = 1
    snapshot_slots: int = 0
    boundary: int = 1  # tokens; a multiple of block_size
    interval: int = 1  # tokens between snapshots; a multiple of boundary
    _free_slots: deque[int] = field(init=False)
    _free_snaps: deque[int] = field(init=False)
    _slot: dict[int, int] = field(init=False, default_factory=dict)  # seq_id -> state slot
    _restore: dict[int, int] = field(init=False, default_factory=dict)  # seq_id -> snapshot to resume from
    _saving: dict[int, list[tuple[int, int]]] = field(init=False, default_factory=dict)  # seq -> (snap, pos)
    _limit: dict[int, int] = field(init=False, default_factory=dict)  # seq_id -> blocks it may register
    _snap_of_block: dict[int, int] = field(init=False, default_factory=dict)
    _parent: dict[int, int] = field(init=False, default_factory=dict)  # cached block -> the cached block before it
    _kids: dict[int, set[int]] = field(init=False, default_factory=dict)  # cached block -> cached blocks after it
    # cached block -> the hash it follows, and that hash -> the cached blocks following it, linked or not: a
    # block cached again after its successors outlived it (they lead to a snapshot) adopts them
    _parent_hash: dict[int, int] = field(init=False, default_factory=dict)
    _next_of_hash: dict[int, set[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        BlockManager.__post_init__(self)
        if self.boundary < 1 or self.boundary % self.block_size or self.interval % self.boundary:
            raise ValueError(f"boundary {self.boundary} / interval {self.interval}: must be multiples of block_size")
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

    def state_args(self, seq: Sequence, start: int, num_tokens: int) -> tuple[int, int, tuple[tuple[int, int], ...]]:
        sid = seq.seq_id
        restore = self._restore.pop(sid, -1)
        end = min(start + num_tokens, seq.num_prompt_tokens - 1)
        wanted = set(range((start // self.interval + 1) * self.interval, end + 1, self.interval))
        last = end // self.boundary * self.boundary
        if last > start and last == (seq.num_prompt_tokens - 1) // self.boundary * self.boundary:
            wanted.add(last)
        saves = []
        for pos in sorted(wanted):
            if self._snapshotted(seq, pos):
                continue  # the same prefix is cached with a snapshot already
            snap = self._free_snaps.popleft() if self._free_snaps else self._reclaim_snapshot()
            if snap is None:
                break
            saves.append((snap, pos))
        self._saving.setdefault(sid, []).extend(saves)
        return self._slot[sid], restore, tuple(saves)

    def commit(self, seq: Sequence) -> None:
        sid = seq.seq_id
        pending = self._saving.get(sid, [])
        done = [(snap, pos) for snap, pos in pending if pos <= seq.num_computed_tokens]
        if done:
            self._limit[sid] = max(self._limit.get(sid, 0), max(pos for _, pos in done) // self.block_size)
        limit = self._limit.get(sid, seq.num_hashed_blocks)
        computed = seq.num_computed_tokens
        seq.num_computed_tokens = min(computed, limit * self.block_size)
        first_new = len(self.events)
        try:
            BlockManager.commit(self, seq)
        finally:
            seq.num_computed_tokens = computed
        ends: list[int] = []
        for snap, pos in done:
            pending.remove((snap, pos))
            end_block = seq.block_table[pos // self.block_size - 1]
            block_hash = self.blocks[end_block].hash
            if block_hash is not None and end_block not in self._snap_of_block:
                self._snap_of_block[end_block] = snap
                ends.append(block_hash)
            else:  # an identical prefix was cached (with its own snapshot) first
                self._free_snaps.append(snap)
        self._announce_ends(first_new, ends)

    def _announce_ends(self, first_new: int, ends: list[int]) -> None:
        """Name the blocks that just got a snapshot in this commit's "stored" events (an ends-only event for
        any stored earlier); every stored event of a stateful model carries ``ends``, empty or not."""
        left = set(ends)
        for i in range(first_new, len(self.events)):
            ev = self.events[i]
            if ev.type == "stored":
                mine = tuple(h for h in ev.block_hashes if h in left)
                left.difference_update(mine)
                self.events[i] = replace(ev, ends=mine)
        if left:
            self.events.append(KVEvent("stored", (), ends=tuple(h for h in ends if h in left)))

    def reuse_ends(self) -> tuple[int, ...] | None:
        return tuple(h for bid in self._snap_of_block if (h := self.blocks[bid].hash) is not None)

    def _snapshotted(self, seq: Sequence, pos: int) -> bool:
        h = self._hashes(seq, pos // self.block_size)[-1]
        bid = self._by_hash.get(h)
        return bid is not None and bid in self._snap_of_block

    def free(self, seq: Sequence) -> None:
        sid = seq.seq_id
        if (slot := self._slot.pop(sid, None)) is not None:
            self._free_slots.append(slot)
        self._free_snaps.extend(snap for snap, _ in self._saving.pop(sid, []))
        self._restore.pop(sid, None)
        self._limit.pop(sid, None)
        BlockManager.free(self, seq)

    def _reclaim_snapshot(self) -> int | None:
        """Take the snapshot of the least recently used unreferenced boundary block (uncaching that block)."""
        for bid in self._evictable:
            if bid in self._snap_of_block:
                self.events.append(KVEvent("removed", (self._uncache(bid),)))
                snap = self._snap_of_block.pop(bid)
                self._unlink(bid)
                return snap
        return None

    def _registered(self, bid: int, parent_hash: int | None) -> None:
        if parent_hash is not None:
            self._parent_hash[bid] = parent_hash
            self._next_of_hash.setdefault(parent_hash, set()).add(bid)
            if (parent := self._by_hash.get(parent_hash)) is not None:
                self._link(parent, bid)
        own = self.blocks[bid].hash
        for kid in self._next_of_hash.get(own, ()) if own is not None else ():
            if kid not in self._parent:  # its parent left the cache before it: this block is that parent again
                self._link(bid, kid)

    def _link(self, parent: int, kid: int) -> None:
        self._parent[kid] = parent
        self._kids.setdefault(parent, set()).add(kid)

    def _left(self, bid: int) -> None:
        """``bid`` is no longer cached: forget the hash it followed."""
        if (parent_hash := self._parent_hash.pop(bid, None)) is not None:
            following = self._next_of_hash.get(parent_hash)
            if following is not None:
                following.discard(bid)
                if not following:
                    del self._next_of_hash[parent_hash]

    def _evicted(self, bid: int) -> None:
        if (snap := self._snap_of_block.pop(bid, None)) is not None:
            self._free_snaps.append(snap)
        self._left(bid)
        self._unlink(bid)

    def _uncache(self, bid: int) -> int:
        """Take an unreferenced cached block out of the cache (to the free list); its hash."""
        block = self.blocks[bid]
        assert block.hash is not None and block.ref_count == 0
        h = block.hash
        del self._by_hash[h]
        block.hash, block.token_ids = None, ()
        del self._evictable[bid]
        self._free.append(bid)
        self._left(bid)
        return h

    def _unlink(self, bid: int) -> None:
        """``bid`` left the cache: drop its links, and uncache the blocks before it that nothing can use now."""
        for kid in self._kids.pop(bid, ()):
            self._parent.pop(kid, None)
        removed = []
        parent = self._parent.pop(bid, None)
        while parent is not None:
            kids = self._kids.get(parent)
            if kids is not None:
                kids.discard(bid)
            if kids or parent in self._snap_of_block or parent not in self._evictable:
                break  # still leads somewhere, resumable itself, or in use by a running sequence
            self._kids.pop(parent, None)
            removed.append(self._uncache(parent))
            bid, parent = parent, self._parent.pop(parent, None)
        if removed:
            self.events.append(KVEvent("removed", tuple(removed)))


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
        interval=runner.snapshot_interval,
    )
