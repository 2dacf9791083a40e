"""Applying engine KV events to the precise index (pure: no I/O, no clocks).

Two sources: the built-in engine's numbered JSON stream (`/v1/kv_events`, snapshot-first) and vLLM's
msgpack batches (`supernode.api.kv_events`). Both raise ``BadEvents`` on input that is not what the
format says; the feed then drops the endpoint back to the approximate index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from supernode.api.hashing import chain_hash, seed_hash
from supernode.api.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch, hash_key
from supernode.router.kv_events.reblock import Reblocker
from supernode.router.routing.precise_index import IndexFull, PreciseIndex

GPU_MEDIA = (None, "GPU")  # blocks in other tiers (CPU offload, disk) are not counted as cached


class BadEvents(ValueError):
    """Malformed KV events (the message names the field)."""


@dataclass(slots=True)
class StreamPosition:
    """Where a built-in engine's stream stands: its instance and the last event applied."""

    instance: str | None = None
    seq: int | None = None


class FeedHooks(Protocol):
    """Where a feed reports its endpoint's mode and bad input (RouterMetrics)."""

    def set_prefix_mode(self, key: str, precise: bool) -> None: ...

    def kv_events_malformed(self, key: str) -> None: ...

    def set_prefix_ranks(self, key: str, ranks: int) -> None: ...


Outcome = Literal["applied", "gap"]

_TYPES = ("snapshot", "stored", "removed", "cleared")


def _hashes(record: dict[str, Any]) -> list[int]:
    hashes = record.get("block_hashes")
    if not isinstance(hashes, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hashes):
        raise BadEvents("block_hashes: must be a list of integers")
    return hashes


def _ends(record: dict[str, Any]) -> list[int] | None:
    """The blocks a reused prefix may end at (stateful models); absent: any cached block."""
    ends = record.get("ends")
    if ends is None:
        return None
    if not isinstance(ends, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ends):
        raise BadEvents("ends: must be a list of integers")
    return ends


def apply_stream_record(index: PreciseIndex, endpoint: str, pos: StreamPosition, record: Any) -> Outcome:
    """One event of the built-in engine's stream. "gap" = not the next event of the instance we follow:
    the caller reconnects for a snapshot (and keeps nothing it cannot vouch for)."""
    if not isinstance(record, dict):
        raise BadEvents("event: must be a JSON object")
    kind, seq, instance = record.get("type"), record.get("seq"), record.get("instance")
    if kind not in _TYPES:
        raise BadEvents(f"type: must be one of {', '.join(_TYPES)}, got {kind!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise BadEvents("seq: must be a non-negative integer")
    if not isinstance(instance, str) or not instance:
        raise BadEvents("instance: must be a non-empty string")
    hashes = _hashes(record)
    ends = _ends(record)
    if kind == "snapshot":
        index.restrict(endpoint, ends is not None)  # a stateful model's engine names where prefixes may end
        index.clear(endpoint)
        _store_own(index, endpoint, hashes)
        index.mark_ends(endpoint, ends or ())
        pos.instance, pos.seq = instance, seq
        return "applied"
    if pos.seq is None or instance != pos.instance or seq != pos.seq + 1:
        return "gap"
    if kind == "stored":
        _store_own(index, endpoint, hashes)
        index.mark_ends(endpoint, ends or ())
    elif kind == "removed":
        index.remove(endpoint, hashes)
    else:
        index.clear(endpoint)
    pos.seq = seq
    return "applied"


def _store_own(index: PreciseIndex, endpoint: str, hashes: list[int]) -> None:
    """The built-in engine hashes blocks with the router's chain: its hashes are the router's."""
    try:
        index.store(endpoint, ((h, h) for h in hashes))
    except IndexFull as e:
        raise BadEvents(str(e)) from None


def apply_batch(index: PreciseIndex, endpoint: str, seed: str, batch: KVEventBatch,
                blocks: Reblocker | None = None) -> None:
    """One vLLM-format batch (vLLM, SGLang, the built-in engine's ZMQ). Stored blocks are re-hashed with the
    router's chain (seeded with ``seed``, the name the router's tokenizer for the model hashes with) from
    their tokens (an engine's own hashes depend on its hash function and seed); a block whose parent the
    index does not know is skipped, since no prompt can reach it through a prefix the engine holds. With
    ``blocks`` (the router's block size for the model is known) the engine's blocks are cut into the
    router's (reblock.py); without, each engine block is taken as one router block."""
    for ev in batch.events:
        if isinstance(ev, BlockStored):
            if ev.medium in GPU_MEDIA and _checked(ev):
                try:
                    if blocks is None:
                        _stored(index, endpoint, seed, ev)
                    else:
                        blocks.stored(index, endpoint, seed, ev)
                except IndexFull as e:
                    raise BadEvents(str(e)) from None
        elif isinstance(ev, BlockRemoved):
            if ev.medium in GPU_MEDIA:
                if blocks is None:
                    index.remove(endpoint, (hash_key(h) for h in ev.block_hashes))
                else:
                    blocks.removed(index, endpoint, ev.block_hashes)
        elif isinstance(ev, AllBlocksCleared):
            index.clear(endpoint)
            if blocks is not None:
                blocks.clear()


def _checked(ev: BlockStored) -> bool:
    """False for blocks no plain prompt reaches; BadEvents when the sizes do not add up."""
    bs = ev.block_size
    if bs < 1:
        raise BadEvents(f"BlockStored.block_size: must be positive, got {bs}")
    if len(ev.token_ids) != bs * len(ev.block_hashes):
        raise BadEvents(f"BlockStored.token_ids: {len(ev.token_ids)} tokens for {len(ev.block_hashes)} "
                        f"blocks of {bs}")
    return not ev.keyed_beyond_tokens()  # adapter, salted or multimodal blocks are keyed by more than tokens


def _stored(index: PreciseIndex, endpoint: str, seed: str, ev: BlockStored) -> None:
    bs = ev.block_size
    if ev.parent_block_hash is None:
        parent: int | None = seed_hash(seed)
    else:
        parent = index.router_hash(endpoint, hash_key(ev.parent_block_hash))
    if parent is None:
        return
    pairs = []
    for i, h in enumerate(ev.block_hashes):
        parent = chain_hash(parent, ev.token_ids[i * bs : (i + 1) * bs])
        pairs.append((hash_key(h), parent))
    index.store(endpoint, pairs)
