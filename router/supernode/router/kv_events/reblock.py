"""Engine KV blocks cut into the router's blocks (pure: no I/O).

The router hashes a prompt in blocks of its tokenizer's size R; an engine reports blocks of its own
size E (SGLang: one radix-cache page, 1 token unless `--page-size` says otherwise; vLLM: `--block-size`,
often 64 or 128 for DeepSeek models). Following the chain of a stored block, its tokens are appended to
what its parent left over: each R tokens complete one router block, and what remains is carried to the
block's children. An engine block that completes router blocks stands for them in the precise index (the
last under its own hash, earlier ones under keys derived from it), so removing the engine block removes
them all. A router block then counts as cached while the engine block that completed it is cached,
which in a prefix cache that evicts leaves first means its whole prefix is too.
"""

from __future__ import annotations

from supernode.api.hashing import chain_hash, seed_hash
from supernode.api.kv_events import BlockHash, BlockStored, hash_key
from supernode.router.routing.precise_index import IndexFull, PreciseIndex

State = tuple[int, tuple[int, ...]]  # (router hash of the last completed router block, tokens since it)


def derived_key(engine_hash: int, i: int) -> int:
    """The index key of the i-th router block an engine block completed before its last one (a tuple of ints
    hashes the same in every process; a clash with a real engine hash is as unlikely as between two of them)."""
    return hash((engine_hash, -1 - i))


class Reblocker:
    """The carried tokens of one endpoint's engine blocks; cleared whenever the endpoint's index is."""

    def __init__(self, size: int, bound: int):
        if size < 1:
            raise ValueError(f"router block size: must be positive, got {size}")
        self.size = size
        self.bound = bound
        self._carry: dict[int, State] = {}  # engine hash → its state, when tokens are left over
        self._spans: dict[int, int] = {}  # engine hash → router blocks it completed before its last one

    def clear(self) -> None:
        self._carry.clear()
        self._spans.clear()

    def _state(self, index: PreciseIndex, endpoint: str, seed: str, parent: BlockHash | None) -> State | None:
        if parent is None:
            return seed_hash(seed), ()
        key = hash_key(parent)
        if (carried := self._carry.get(key)) is not None:
            return carried
        rh = index.router_hash(endpoint, key)
        return None if rh is None else (rh, ())

    def stored(self, index: PreciseIndex, endpoint: str, seed: str, ev: BlockStored) -> None:
        """One BlockStored whose sizes were checked; a parent unknown to us makes it unreachable (skipped)."""
        state = self._state(index, endpoint, seed, ev.parent_block_hash)
        if state is None:
            return
        bs, pairs = ev.block_size, []
        for i, h in enumerate(ev.block_hashes):
            eh = hash_key(h)
            self._forget(index, endpoint, eh)  # stored again: what it stood for before is replaced
            router, tokens = state[0], state[1] + tuple(ev.token_ids[i * bs : (i + 1) * bs])
            done = []
            while len(tokens) >= self.size:
                router = chain_hash(router, tokens[: self.size])
                done.append(router)
                tokens = tokens[self.size :]
            if done:
                pairs.append((eh, done[-1]))
                pairs += [(derived_key(eh, j), r) for j, r in enumerate(done[:-1])]
                if len(done) > 1:
                    self._spans[eh] = len(done) - 1
            if tokens:
                self._carry[eh] = (router, tokens)
            state = (router, tokens)
        index.store(endpoint, pairs)
        if len(self._carry) > self.bound:
            raise IndexFull(f"{endpoint} reports more than {self.bound} blocks short of a router block")

    def removed(self, index: PreciseIndex, endpoint: str, hashes: list[BlockHash]) -> None:
        for h in hashes:
            self._forget(index, endpoint, hash_key(h))

    def _forget(self, index: PreciseIndex, endpoint: str, eh: int) -> None:
        self._carry.pop(eh, None)
        index.remove(endpoint, [eh, *(derived_key(eh, j) for j in range(self._spans.pop(eh, 0)))])
