"""Approximate prefix index: which chained block hashes each endpoint has probably cached.

State only (STYLE.md #6): updated after a pick (or from engine KV events), read by the prefix
scorer. Each endpoint's set is a bounded LRU, so the index never outgrows its configuration.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import overload

from supernode.api.hashing import iter_block_hashes, text_units


def request_hashes(model: str, text: str, *, block_size: int, max_blocks: int) -> tuple[int, ...]:
    """Chained block hashes of a rendered prompt (UTF-8 bytes as units), seeded with the model."""
    units = text_units(text[: block_size * max_blocks])[: block_size * max_blocks]
    return tuple(iter_block_hashes(units, model, block_size))


class LazyRequestHashes(Sequence[int]):
    """``request_hashes`` computed only as far as a reader needs them (equal element by element).

    A router that tokenizes the prompt routes precise endpoints by token hashes and never needs these;
    the tie-break seed needs only the first few blocks. Reading ``len()`` or the whole sequence computes
    the rest once; the chain is extended, never recomputed."""

    __slots__ = ("_done", "_more")

    def __init__(self, model: str, text: str, *, block_size: int, max_blocks: int):
        self._done: list[int] = []
        self._more: Iterator[int] | None = self._chain(model, text, block_size, max_blocks)

    @staticmethod
    def _chain(model: str, text: str, block_size: int, max_blocks: int) -> Iterator[int]:
        units = text_units(text[: block_size * max_blocks])[: block_size * max_blocks]
        yield from iter_block_hashes(units, model, block_size)

    def _fill(self, n: int | None) -> None:
        """Extend the computed prefix to at least ``n`` blocks (None: all of them)."""
        more = self._more
        if more is None:
            return
        for h in more:
            self._done.append(h)
            if n is not None and len(self._done) >= n:
                return
        self._more = None

    def __len__(self) -> int:
        self._fill(None)
        return len(self._done)

    def __bool__(self) -> bool:
        self._fill(1)
        return bool(self._done)

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[int, ...]: ...
    def __getitem__(self, i: int | slice) -> int | tuple[int, ...]:
        if isinstance(i, slice):
            stop = i.stop
            simple = (i.start is None or i.start >= 0) and stop is not None and stop >= 0 and (i.step or 1) > 0
            self._fill(stop if simple else None)
            return tuple(self._done[i])
        self._fill(i + 1 if i >= 0 else None)
        return self._done[i]

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            if i >= len(self._done):
                self._fill(i + 1)
                if i >= len(self._done):
                    return
            yield self._done[i]
            i += 1


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
