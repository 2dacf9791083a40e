"""Approximate prefix index: which chained block hashes each endpoint has probably cached.

State only (STYLE.md #6): updated after a pick (or from engine KV events), read by the prefix
scorer. Each endpoint's set is a bounded LRU, so the index never outgrows its configuration.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Iterable, Sequence

from supernode.api.hashing import iter_block_hashes, text_units


def request_hashes(model: str, text: str, *, block_size: int, max_blocks: int) -> tuple[int, ...]:
    """Chained block hashes of a rendered prompt (UTF-8 bytes as units), seeded with the model."""
    units = text_units(text[: block_size * max_blocks])[: block_size * max_blocks]
    return tuple(iter_block_hashes(units, model, block_size))


def leading_blocks(held: Container[int] | None, hashes: Sequence[int]) -> int:
    """How many leading chained hashes ``held`` contains (a chain: the first miss ends the prefix)."""
    if not held:
        return 0
    n = 0
    for h in hashes:
        if h not in held:
            break
        n += 1
    return n


class PrefixIndex:
    def __init__(self, capacity_blocks: int):
        if capacity_blocks < 1:
            raise ValueError("capacity_blocks must be >= 1")
        self.capacity_blocks = capacity_blocks
        self._blocks: dict[str, OrderedDict[int, None]] = {}

    def match(self, endpoint: str, hashes: Sequence[int]) -> int:
        """Number of leading blocks of ``hashes`` the endpoint holds (chained: stop at the first miss)."""
        return leading_blocks(self._blocks.get(endpoint), hashes)

    def insert(self, endpoint: str, hashes: Iterable[int]) -> None:
        blocks = self._blocks.setdefault(endpoint, OrderedDict())
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)

    def remove(self, endpoint: str, hashes: Iterable[int]) -> None:
        blocks = self._blocks.get(endpoint)
        if blocks:
            for h in hashes:
                blocks.pop(h, None)

    def drop(self, endpoint: str) -> None:
        self._blocks.pop(endpoint, None)

    def size(self, endpoint: str) -> int:
        return len(self._blocks.get(endpoint, ()))


class SessionMap:
    """Bounded LRU of session key → endpoint last used."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._map: OrderedDict[str, str] = OrderedDict()

    def get(self, session: str) -> str | None:
        return self._map.get(session)

    def put(self, session: str, endpoint: str) -> None:
        self._map[session] = endpoint
        self._map.move_to_end(session)
        while len(self._map) > self.capacity:
            self._map.popitem(last=False)

    def drop_endpoint(self, endpoint: str) -> None:
        for key in [k for k, v in self._map.items() if v == endpoint]:
            del self._map[key]
