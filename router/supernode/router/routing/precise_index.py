"""Precise prefix index: the blocks each engine reports holding (KV events), in the router's hashes.

State only, written by the KV event feeds (router/kv_events/) and read by the prefix scorer. An
engine names blocks by its own hashes; each is kept with the router's hash of the same block (the
chain of ``supernode.api.hashing`` over the block's tokens, seeded with the model), which is what
requests carry in ``RoutingRequest.token_block_hashes``. For the built-in engine both are equal.

An endpoint is *precise* only while its feed holds the engine's complete, in-order history; the
scorer falls back to the approximate index for every other endpoint.

Some engines can resume a cached prefix only at certain blocks (DeepSeek-V4 on the built-in engine:
where a state snapshot was taken), though the blocks between are cached too. Their feeds mark the
endpoint *restricted* and name those blocks (``mark_ends``); a match there ends at the last named block
of the leading run, which is what the engine will reuse.

An endpoint with several data-parallel ranks (``set_ranks``) holds one cache per rank: each rank's feed
writes under ``dp_ranks.rank_key(endpoint, r)``, and reads by the endpoint's own key combine them (precise
only while every rank is; the match of the best rank where a request can name its rank, else the
expected match when the engine picks the rank itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from supernode.router.routing.dp_ranks import rank_key
from supernode.router.routing.prefix_index import leading_blocks


class IndexFull(ValueError):
    """An endpoint reported more blocks than the configured bound (a misbehaving engine)."""


class PreciseIndex:
    def __init__(self, max_blocks_per_endpoint: int = 4_000_000):
        self.max_blocks = max_blocks_per_endpoint
        self._engine: dict[str, dict[int, int]] = {}  # endpoint → engine hash → router hash
        self._ours: dict[str, dict[int, int]] = {}  # endpoint → router hash → engine blocks with it
        self._precise: set[str] = set()
        self._ends: dict[str, set[int]] = {}  # restricted endpoint → engine hashes a reused prefix may end at
        self._end_ours: dict[str, dict[int, int]] = {}  # restricted endpoint → router hash → ends with it
        self._ranks: dict[str, tuple[list[str], bool]] = {}  # data-parallel endpoint → (rank keys, pinnable)

    # --- data-parallel ranks --------------------------------------------------------------------
    def set_ranks(self, endpoint: str, ranks: int, pinnable: bool) -> None:
        """The endpoint keeps one cache per rank (``ranks`` > 1); ``pinnable``: a request can name its rank."""
        if ranks > 1:
            self._ranks[endpoint] = ([rank_key(endpoint, r) for r in range(ranks)], pinnable)
        else:
            self._ranks.pop(endpoint, None)

    def ranks(self, endpoint: str) -> int:
        entry = self._ranks.get(endpoint)
        return len(entry[0]) if entry else 1

    def rank_matches(self, endpoint: str, hashes: Sequence[int]) -> list[int]:
        """Leading blocks of ``hashes`` each rank of a data-parallel endpoint holds ([] for other endpoints)."""
        entry = self._ranks.get(endpoint)
        return [self._match(key, hashes) for key in entry[0]] if entry else []

    # --- mode ---------------------------------------------------------------------------------
    def is_precise(self, endpoint: str) -> bool:
        entry = self._ranks.get(endpoint)
        if entry is not None:
            return all(key in self._precise for key in entry[0])
        return endpoint in self._precise

    def set_precise(self, endpoint: str, precise: bool) -> None:
        if precise:
            self._precise.add(endpoint)
        else:
            self._precise.discard(endpoint)

    # --- reads --------------------------------------------------------------------------------
    def match(self, endpoint: str, hashes: Sequence[int]) -> int:
        """Leading blocks of ``hashes`` (router hashes) the endpoint holds and can reuse: it stops at the first
        miss, and on a restricted endpoint goes back to the last block a reused prefix may end at. On a
        data-parallel endpoint: its best rank's, where the request can be sent there; else the mean over
        its ranks (the engine's balancer picks one, each alike as far as the router knows)."""
        entry = self._ranks.get(endpoint)
        if entry is None:
            return self._match(endpoint, hashes)
        per_rank = [self._match(key, hashes) for key in entry[0]]
        return max(per_rank) if entry[1] else sum(per_rank) // len(per_rank)

    def _match(self, endpoint: str, hashes: Sequence[int]) -> int:
        n = leading_blocks(self._ours.get(endpoint), hashes)
        ends = self._end_ours.get(endpoint)
        if ends is not None:
            while n and hashes[n - 1] not in ends:
                n -= 1
        return n

    def is_restricted(self, endpoint: str) -> bool:
        return endpoint in self._ends

    def router_hash(self, endpoint: str, engine_hash: int) -> int | None:
        return self._engine.get(endpoint, {}).get(engine_hash)

    def size(self, endpoint: str) -> int:
        entry = self._ranks.get(endpoint)
        keys = entry[0] if entry else (endpoint,)
        return sum(len(self._engine.get(key, ())) for key in keys)

    # --- writes -------------------------------------------------------------------------------
    def store(self, endpoint: str, pairs: Iterable[tuple[int, int]]) -> None:
        """Record blocks as (engine hash, router hash); raises IndexFull beyond the bound."""
        engine = self._engine.setdefault(endpoint, {})
        ours = self._ours.setdefault(endpoint, {})
        for eh, rh in pairs:
            old = engine.get(eh)
            if old == rh:
                continue
            if old is not None:
                self._release(ours, old)
                if eh in self._ends.get(endpoint, ()):  # a different block now: not an end until marked
                    self._ends[endpoint].discard(eh)
                    self._release(self._end_ours[endpoint], old)
            engine[eh] = rh
            ours[rh] = ours.get(rh, 0) + 1
        if len(engine) > self.max_blocks:
            raise IndexFull(f"{endpoint} reports {len(engine)} cached blocks, more than the bound {self.max_blocks}")

    def restrict(self, endpoint: str, restricted: bool) -> None:
        """Whether the endpoint reuses prefixes only up to blocks named by ``mark_ends`` (none named yet)."""
        if restricted:
            self._ends[endpoint], self._end_ours[endpoint] = set(), {}
        else:
            self._ends.pop(endpoint, None)
            self._end_ours.pop(endpoint, None)

    def mark_ends(self, endpoint: str, engine_hashes: Iterable[int]) -> None:
        """Blocks the (restricted) endpoint holds that a reused prefix may end at; unknown blocks are ignored."""
        ends, engine = self._ends.get(endpoint), self._engine.get(endpoint, {})
        if ends is None:
            return
        end_ours = self._end_ours[endpoint]
        for eh in engine_hashes:
            rh = engine.get(eh)
            if rh is not None and eh not in ends:
                ends.add(eh)
                end_ours[rh] = end_ours.get(rh, 0) + 1

    def remove(self, endpoint: str, engine_hashes: Iterable[int]) -> None:
        engine = self._engine.get(endpoint)
        if not engine:
            return
        ours = self._ours[endpoint]
        ends = self._ends.get(endpoint)
        for eh in engine_hashes:
            rh = engine.pop(eh, None)
            if rh is not None:
                self._release(ours, rh)
                if ends is not None and eh in ends:
                    ends.discard(eh)
                    self._release(self._end_ours[endpoint], rh)

    def clear(self, endpoint: str) -> None:
        """The engine holds nothing (restart, AllBlocksCleared) — or we no longer know what it holds."""
        self._engine.pop(endpoint, None)
        self._ours.pop(endpoint, None)
        if endpoint in self._ends:
            self.restrict(endpoint, True)

    def drop(self, endpoint: str) -> None:
        for key in self._ranks.pop(endpoint, ([], False))[0]:
            self.drop(key)
        self.clear(endpoint)
        self.restrict(endpoint, False)
        self._precise.discard(endpoint)

    @staticmethod
    def _release(ours: dict[int, int], rh: int) -> None:
        left = ours.get(rh, 0) - 1
        if left > 0:
            ours[rh] = left
        else:
            ours.pop(rh, None)
