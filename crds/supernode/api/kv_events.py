"""KV cache events on the wire: vLLM's format, spoken by the built-in engine and read by the router.

vLLM (`--kv-events-config`, publisher "zmq") sends each batch of cache changes as a ZMQ multipart
message ``[topic, seq, payload]`` on a PUB socket: ``seq`` is an 8-byte big-endian counter starting at
0, ``payload`` a msgpack ``KVEventBatch``. A ROUTER socket answers replay requests: a DEALER sends
``[b"", start_seq]`` and gets ``[b"", seq, payload]`` for every buffered batch from ``start_seq`` on,
then ``[b"", END_SEQ, b""]``. Events are tagged unions (the tag is the class name).

vLLM changed the struct encoding over time: up to about v0.11 the structs are ``array_like`` (a batch
is ``[ts, [[tag, field, ...], ...], dp_rank]``); later versions encode maps (``{"type": tag, ...}``)
and may send block hashes as bytes. ``decode_batch`` reads both; ``encode_batch`` writes the
array form, which every reader of the format accepts.

SGLang (`--kv-events-config`) publishes the same array form on the same sockets (its structs mirror
vLLM's): one BlockStored per page (``block_size`` = the page's tokens) chained by ``parent_block_hash``,
``medium`` "GPU" or a lower tier ("CPU_PINNED", ...), a trailing metadata map on salted blocks, and the
batch's third field is its attention-DP rank.
"""

from __future__ import annotations

from typing import Any

import msgspec

END_SEQ = (-1).to_bytes(8, "big", signed=True)


def seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def seq_of(frame: bytes) -> int:
    """A sequence frame as an int (-1 for END_SEQ); ValueError when it is not 8 bytes."""
    if len(frame) != 8:
        raise ValueError(f"sequence frame: expected 8 bytes, got {len(frame)}")
    return int.from_bytes(frame, "big", signed=True)


BlockHash = int | bytes


class _ArrayEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class BlockStored(_ArrayEvent):
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    # Past `medium` the engines differ: vLLM sends lora_name then extra_keys (multimodal hashes, cache
    # salt), SGLang a metadata map carrying its cache_salt. Any of them set means the block's key holds more
    # than its tokens, so no plain prompt of the base model reaches it (``keyed_beyond_tokens``).
    extra: Any = None
    extra_keys: Any = None

    def keyed_beyond_tokens(self) -> bool:
        """An adapter, a cache salt or extra keys (images, ...) are part of this block's key."""
        keys = self.extra_keys
        return (self.lora_id is not None or self.extra is not None
                or (isinstance(keys, list) and any(k is not None for k in keys)))


class BlockRemoved(_ArrayEvent):
    block_hashes: list[BlockHash]
    medium: str | None = None


class AllBlocksCleared(_ArrayEvent):
    pass


Event = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Event]
    data_parallel_rank: int | None = None


# The later map encoding: the same fields, keyed by name.
class _MapEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    pass


class _MapStored(_MapEvent, tag="BlockStored"):
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class _MapRemoved(_MapEvent, tag="BlockRemoved"):
    block_hashes: list[BlockHash]
    medium: str | None = None
    group_idx: int | None = None


class _MapCleared(_MapEvent, tag="AllBlocksCleared"):
    pass


class _MapBatch(msgspec.Struct, omit_defaults=True, gc=False):
    ts: float
    events: list[_MapStored | _MapRemoved | _MapCleared]
    data_parallel_rank: int | None = None


_array_decoder = msgspec.msgpack.Decoder(KVEventBatch)
_map_decoder = msgspec.msgpack.Decoder(_MapBatch)
_encoder = msgspec.msgpack.Encoder()


class MalformedEvents(ValueError):
    """A payload that is not a KVEventBatch in either encoding (the message says why)."""


def decode_batch(payload: bytes) -> KVEventBatch:
    try:
        return _array_decoder.decode(payload)
    except msgspec.DecodeError as first:
        try:
            batch = _map_decoder.decode(payload)
        except msgspec.DecodeError:
            raise MalformedEvents(f"KVEventBatch: {first}") from None
    return KVEventBatch(batch.ts, [_from_map(e) for e in batch.events], batch.data_parallel_rank)


def _from_map(e: _MapStored | _MapRemoved | _MapCleared) -> Event:
    if isinstance(e, _MapStored):
        return BlockStored(e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size, e.lora_id, e.medium,
                           e.lora_name, e.extra_keys)
    if isinstance(e, _MapRemoved):
        return BlockRemoved(e.block_hashes, e.medium)
    return AllBlocksCleared()


def encode_batch(batch: KVEventBatch) -> bytes:
    return _encoder.encode(batch)


def hash_key(h: BlockHash) -> int:
    """An engine block hash as an int (later vLLM versions send bytes)."""
    return h if isinstance(h, int) else int.from_bytes(h, "big")
