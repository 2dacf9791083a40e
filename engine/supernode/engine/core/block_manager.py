"""Paged KV blocks with block-level prefix caching.

A block's hash chains its parent's hash with its tokens (``supernode.api.hashing``, seeded with the
served model name). Cache changes go out as KV events (stored / removed); the router keeps them in
its precise prefix index and hashes the prompts it tokenizes with the same chain, so the two meet.
Only blocks whose KV has been computed are registered, so a hit never reads KV that is still being
written. A block whose ref count drops to zero stays in the cache (evictable, LRU) until a fresh
block is needed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

from supernode.api.hashing import chain_hash, seed_hash
from supernode.engine.core.sequence import Sequence


@dataclass(frozen=True, slots=True)
class KVEvent:
    """A change to the set of cached blocks (consumed by routers for precise prefix routing).

    A "stored" event is one chain: ``block_hashes[0]`` follows ``parent`` (None: the model's seed) and
    ``token_ids`` holds the tokens of all its blocks, as vLLM's BlockStored does.
    """

    type: Literal["stored", "removed", "cleared", "snapshot"]  # snapshot: every cached block (replaces the set)
    block_hashes: tuple[int, ...]
    parent: int | None = None
    token_ids: tuple[int, ...] = ()
    # Cached blocks a reused prefix may end at ("stored": of these or earlier blocks; "snapshot": all of them).
    # None: any cached block (plain paged KV). Stateful models (V4) resume only where a state snapshot was taken.
    ends: tuple[int, ...] | None = None


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()  # kept to detect hash collisions


@dataclass(slots=True)
class PrefixStats:
    queries: int = 0  # prompt tokens looked up
    hits: int = 0  # prompt tokens found cached


@dataclass(slots=True)
class BlockManager:
    num_blocks: int
    block_size: int
    model_name: str
    blocks: list[Block] = field(init=False)
    _free: deque[int] = field(init=False)  # never-hashed free blocks
    _evictable: OrderedDict[int, None] = field(init=False)  # free but cached, LRU first
    _by_hash: dict[int, int] = field(init=False)
    _root: int = field(init=False)
    events: list[KVEvent] = field(init=False, default_factory=list)
    stats: PrefixStats = field(init=False, default_factory=PrefixStats)

    def __post_init__(self) -> None:
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.blocks = [Block(i) for i in range(self.num_blocks)]
        self._free = deque(range(self.num_blocks))
        self._evictable = OrderedDict()
        self._by_hash = {}
        self._root = seed_hash(self.model_name)

    # --- accounting ---------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation may take (never-used plus evictable cached)."""
        return len(self._free) + len(self._evictable)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by live sequences (vLLM's KV-cache usage)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        want = -(-num_tokens // self.block_size)
        return max(0, want - len(seq.block_table))

    # --- prefix cache ---------------------------------------------------------------------------
    def _hashes(self, seq: Sequence, num_full_blocks: int) -> list[int]:
        bs = self.block_size
        while len(seq.block_hashes) < num_full_blocks:
            i = len(seq.block_hashes)
            parent = seq.block_hashes[-1] if seq.block_hashes else self._root
            seq.block_hashes.append(chain_hash(parent, seq.token_ids[i * bs : (i + 1) * bs]))
        return seq.block_hashes[:num_full_blocks]

    def find_cached(self, seq: Sequence) -> list[int]:
        """Leading cached blocks of a not-yet-admitted sequence (at most len-1 tokens, so one is computed)."""
        bs = self.block_size
        hits: list[int] = []
        if seq.params.prompt_logprobs is not None:
            return hits  # prompt log-probabilities need every prompt position computed
        for i, h in enumerate(self._hashes(seq, (len(seq) - 1) // bs)):
            bid = self._by_hash.get(h)
            if bid is None or self.blocks[bid].token_ids != tuple(seq.token_ids[i * bs : (i + 1) * bs]):
                break  # miss, or a hash collision caught by comparing tokens
            hits.append(bid)
        return hits

    def admit(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Give a waiting sequence its cached prefix plus blocks for ``num_new_tokens`` more.

        Returns False (changing nothing) when there are not enough free blocks. On success
        ``seq.num_computed_tokens`` counts the cached prefix.
        """
        assert not seq.block_table, "admit() is for sequences holding no blocks"
        hits = self.find_cached(seq)
        num_cached = len(hits) * self.block_size
        num_new_tokens = min(num_new_tokens, len(seq) - num_cached)
        want = -(-(num_cached + num_new_tokens) // self.block_size) - len(hits)
        reclaimable = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        if want > self.num_free_blocks - reclaimable:
            return False
        for bid in hits:
            self._ref(bid)
        seq.block_table = hits
        seq.num_hashed_blocks = len(hits)
        seq.num_computed_tokens = num_cached
        if not seq.admitted_once:
            seq.admitted_once = True
            seq.num_cached_tokens = num_cached
            self.stats.queries += len(seq)
            self.stats.hits += num_cached
        self._grow(seq, want)
        return True

    def can_append(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.blocks_needed(seq, seq.num_computed_tokens + num_new_tokens) <= self.num_free_blocks

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> None:
        """Ensure the block table covers ``num_new_tokens`` beyond the computed ones (check can_append first)."""
        self._grow(seq, self.blocks_needed(seq, seq.num_computed_tokens + num_new_tokens))

    def commit(self, seq: Sequence) -> None:
        """Register the sequence's newly computed full blocks in the prefix cache."""
        bs = self.block_size
        full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        if full <= seq.num_hashed_blocks:
            return
        hashes = self._hashes(seq, full)
        run: list[int] = []  # consecutive newly cached blocks: one "stored" event each run
        for i in range(seq.num_hashed_blocks, full + 1):
            block = self.blocks[seq.block_table[i]] if i < full else None
            if block is None or hashes[i] in self._by_hash or block.hash is not None:
                if run:  # an identical block is cached already (this copy stays private), or the end
                    self.events.append(self._stored_event(seq, hashes, run))
                    run = []
                continue
            block.hash = hashes[i]
            block.token_ids = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            self._by_hash[hashes[i]] = block.block_id
            self._registered(block.block_id, hashes[i - 1] if i else None)
            run.append(i)
        seq.num_hashed_blocks = full

    def _stored_event(self, seq: Sequence, hashes: list[int], run: list[int]) -> KVEvent:
        bs, first = self.block_size, run[0]
        parent = hashes[first - 1] if first else None
        tokens = tuple(seq.token_ids[first * bs : (run[-1] + 1) * bs])
        return KVEvent("stored", tuple(hashes[i] for i in run), parent, tokens)

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks (newest first, so older prefix blocks are evicted last)."""
        for bid in reversed(seq.block_table):
            block = self.blocks[bid]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.hash is None:
                    self._free.append(bid)
                else:
                    self._evictable[bid] = None
        seq.block_table = []
        seq.num_hashed_blocks = 0
        seq.num_computed_tokens = 0

    def cached_hashes(self) -> list[int]:
        return list(self._by_hash)

    def reuse_ends(self) -> tuple[int, ...] | None:
        """Cached blocks a reused prefix may end at (None: every cached block)."""
        return None

    def state_args(self, seq: Sequence, start: int, num_tokens: int) -> tuple[int, int, tuple[tuple[int, int], ...]]:
        """Per-sequence model state for one chunk: (slot, restore, saves); none for paged-only models."""
        return -1, -1, ()

    def drain_events(self) -> list[KVEvent]:
        events, self.events = self.events, []
        return events

    # --- internals ------------------------------------------------------------------------------
    def _registered(self, bid: int, parent_hash: int | None) -> None:
        """A block entered the prefix cache after the block cached under ``parent_hash`` (None: first)."""

    def _evicted(self, bid: int) -> None:
        """A cached block was taken for reuse (subclasses drop what they attached to it)."""

    def _ref(self, bid: int) -> None:
        block = self.blocks[bid]
        if block.ref_count == 0:
            self._evictable.pop(bid, None)
        block.ref_count += 1

    def _grow(self, seq: Sequence, n: int) -> None:
        if n > self.num_free_blocks:
            raise RuntimeError(f"out of KV blocks: need {n}, have {self.num_free_blocks}")
        evicted: list[int] = []
        for _ in range(n):
            if self._free:
                bid = self._free.popleft()
            else:
                bid, _ = self._evictable.popitem(last=False)
                block = self.blocks[bid]
                assert block.hash is not None
                del self._by_hash[block.hash]
                evicted.append(block.hash)
                block.hash, block.token_ids = None, ()
                self._evicted(bid)
            self.blocks[bid].ref_count = 1
            seq.block_table.append(bid)
        if evicted:
            self.events.append(KVEvent("removed", tuple(evicted)))
