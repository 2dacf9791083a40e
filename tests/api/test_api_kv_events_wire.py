"""vLLM's KV event wire format: payloads built with vLLM's own msgspec schema decode with ours, and
ours decode with vLLM's (what llm-d's or Dynamo's routers read from the built-in engine).

vLLM cannot be installed here, so the structs below mirror vLLM's `vllm/distributed/kv_events.py`
field for field: ``V011*`` the array-like encoding of vLLM v0.10/v0.11 (BlockStored with lora_id and
medium, EventBatch with data_parallel_rank); ``Main*`` the map encoding of later vLLM (block hashes as
``bytes | int``, plus lora_name, extra_keys, group_idx and the cache-spec fields).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from supernode.api.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    MalformedEvents,
    decode_batch,
    encode_batch,
    hash_key,
)


# --- mirror of vllm/distributed/kv_events.py, v0.11.0 ---------------------------------------------
class V011EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class V011KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg]
    """Base class for all KV cache-related events"""


class V011BlockStored(V011KVCacheEvent, tag="BlockStored"):
    block_hashes: list[int | bytes]
    parent_block_hash: int | bytes | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None


class V011BlockRemoved(V011KVCacheEvent, tag="BlockRemoved"):
    block_hashes: list[int | bytes]
    medium: str | None


class V011AllBlocksCleared(V011KVCacheEvent, tag="AllBlocksCleared"):
    pass


class V011KVEventBatch(V011EventBatch):
    events: list[V011BlockStored | V011BlockRemoved | V011AllBlocksCleared]


# --- mirror of vllm/distributed/kv_events.py, main (map encoding) ----------------------------------
class MainEventBatch(msgspec.Struct, omit_defaults=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class MainKVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg]
    """Base class for all KV cache-related events"""


class MainBlockStored(MainKVCacheEvent, tag="BlockStored"):
    block_hashes: list[bytes | int]
    parent_block_hash: bytes | int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class MainBlockRemoved(MainKVCacheEvent, tag="BlockRemoved"):
    block_hashes: list[bytes | int]
    medium: str | None
    group_idx: int | None = None


class MainAllBlocksCleared(MainKVCacheEvent, tag="AllBlocksCleared"):
    pass


class MainKVEventBatch(MainEventBatch):
    events: list[MainBlockStored | MainBlockRemoved | MainAllBlocksCleared]


def test_decodes_vllm_v011_array_batches() -> None:
    payload = msgspec.msgpack.encode(V011KVEventBatch(12.5, [
        V011BlockStored([11, 12], None, [1, 2, 3, 4], 2, None, "GPU"),
        V011BlockRemoved([11], "GPU"),
        V011AllBlocksCleared(),
    ], data_parallel_rank=0))
    batch = decode_batch(payload)
    assert batch.ts == 12.5 and batch.data_parallel_rank == 0
    stored, removed, cleared = batch.events
    assert isinstance(stored, BlockStored) and stored.block_hashes == [11, 12] and stored.token_ids == [1, 2, 3, 4]
    assert stored.parent_block_hash is None and stored.block_size == 2 and stored.medium == "GPU"
    assert isinstance(removed, BlockRemoved) and removed.block_hashes == [11]
    assert isinstance(cleared, AllBlocksCleared)


def test_decodes_vllm_main_map_batches_with_bytes_hashes() -> None:
    h1, h2 = b"\x01" * 32, b"\x02" * 32
    payload = msgspec.msgpack.encode(MainKVEventBatch(3.0, [
        MainBlockStored([h2], h1, [5, 6], 2, None, "GPU", None, extra_keys=[None], group_idx=0),
        MainBlockRemoved([h1], "CPU"),
    ]))
    stored, removed = decode_batch(payload).events
    assert isinstance(stored, BlockStored) and stored.block_hashes == [h2] and stored.parent_block_hash == h1
    assert isinstance(removed, BlockRemoved) and removed.medium == "CPU"
    assert hash_key(h1) == int.from_bytes(h1, "big") and hash_key(7) == 7


def test_our_batches_decode_with_vllms_schema() -> None:
    ours = encode_batch(KVEventBatch(1.0, [BlockStored([7, 8], 6, [1, 2, 3, 4], 2, None, "GPU"),
                                           BlockRemoved([6], "GPU"), AllBlocksCleared()], 0))
    batch = msgspec.msgpack.decode(ours, type=V011KVEventBatch)
    assert [type(e).__name__ for e in batch.events] == ["V011BlockStored", "V011BlockRemoved", "V011AllBlocksCleared"]
    assert batch.events[0].parent_block_hash == 6 and batch.events[0].token_ids == [1, 2, 3, 4]


@pytest.mark.parametrize("payload", [
    b"\xc1",  # never valid msgpack
    msgspec.msgpack.encode([1.0, [["BlockExploded", [1]]]]),
    msgspec.msgpack.encode([1.0, [["BlockStored", "not-a-list", None, [], 2, None, None]]]),
    msgspec.msgpack.encode({"ts": "yesterday", "events": []}),
])
def test_malformed_payloads_raise(payload: bytes) -> None:
    with pytest.raises(MalformedEvents, match="KVEventBatch"):
        decode_batch(payload)


def test_the_endpoint_record_names_where_its_kv_events_come_from() -> None:
    import pydantic

    from supernode.api.endpoints import Endpoint

    assert Endpoint(url="http://e", model="m").kv_events_source() == "http"  # the built-in engine's stream
    assert Endpoint(url="http://e", model="m", engine_type="vllm").kv_events_source() == "none"
    vllm = Endpoint.model_validate({"url": "http://e", "model": "m", "engineType": "vllm",
                                    "kvEvents": "tcp://10.0.0.5:5557", "kvEventsReplay": "tcp://10.0.0.5:5558"})
    assert vllm.kv_events_source() == "tcp://10.0.0.5:5557"
    with pytest.raises(pydantic.ValidationError, match="kvEvents"):
        Endpoint.model_validate({"url": "http://e", "model": "m", "kvEvents": "udp://x"})
