"""SGLang's KV events decode with our reader: payloads built with SGLang's own msgspec layout.

SGLang cannot be installed here, so the structs below mirror `sglang/srt/disaggregation/kv_events.py`
field for field, in two generations: ``Sg25*`` (BlockStored ends at lora_id, BlockRemoved has only the
hashes, the batch has no rank) and ``Sg*`` (later: ``medium`` on both events, the batch's
``attn_dp_rank``, and ``BlockStoredWithMetadata`` appending a metadata struct with the cache salt
under the same "BlockStored" tag). SGLang's radix cache emits one BlockStored per page, chained by
``parent_block_hash``, with ``block_size`` = the page's token count.
"""

from __future__ import annotations

from typing import Any

import msgspec

from supernode.api.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, decode_batch


# --- mirror of SGLang's kv_events.py, 2025 layout --------------------------------------------------
class Sg25EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[Any]


class Sg25KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg]
    """Base of SGLang's KV cache events."""


class Sg25BlockStored(Sg25KVCacheEvent, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None


class Sg25BlockRemoved(Sg25KVCacheEvent, tag="BlockRemoved"):
    block_hashes: list[int]


class Sg25AllBlocksCleared(Sg25KVCacheEvent, tag="AllBlocksCleared"):
    pass


# --- mirror of SGLang's kv_events.py, later layout -------------------------------------------------
class SgEventBatch(msgspec.Struct, array_like=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[Any]
    attn_dp_rank: int | None = None


class SgKVCacheEvent(msgspec.Struct, array_like=True, gc=False, tag=True):  # type: ignore[call-arg]
    """Base of SGLang's KV cache events."""


class SgBlockStored(SgKVCacheEvent, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None = None


class SgBlockStoredMetadata(msgspec.Struct, gc=False):  # type: ignore[call-arg]
    cache_salt: str | None = None


class SgBlockStoredWithMetadata(SgBlockStored, tag="BlockStored", kw_only=True):
    metadata: SgBlockStoredMetadata


class SgBlockRemoved(SgKVCacheEvent, tag="BlockRemoved"):
    block_hashes: list[int]
    medium: str | None = None


class SgAllBlocksCleared(SgKVCacheEvent, tag="AllBlocksCleared"):
    pass


def sglang_pages(tokens: list[int], page: int, *, parent: int | None = None, salt: str | None = None,
                 medium: str = "GPU", first_hash: int = 1000) -> tuple[list[Any], int | None]:
    """What SGLang's radix cache records for a node of ``tokens``: one BlockStored per page (the last one
    possibly short), each naming the previous page as its parent. Returns (events, last page's hash)."""
    events: list[Any] = []
    for i, start in enumerate(range(0, len(tokens), page)):
        chunk = tokens[start:start + page]
        h = first_hash + i
        if salt is None:
            events.append(SgBlockStored([h], parent, chunk, len(chunk), None, medium))
        else:
            events.append(SgBlockStoredWithMetadata([h], parent, chunk, len(chunk), None, medium,
                                                    metadata=SgBlockStoredMetadata(salt)))
        parent = h
    return events, parent


def test_decodes_sglang_2025_batches() -> None:
    payload = msgspec.msgpack.encode(Sg25EventBatch(4.5, [
        Sg25BlockStored([11], None, [1, 2], 2, None), Sg25BlockStored([12], 11, [3, 4], 2, None),
        Sg25BlockRemoved([12]), Sg25AllBlocksCleared()]))
    batch = decode_batch(payload)
    assert batch.ts == 4.5 and batch.data_parallel_rank is None
    first, second, removed, cleared = batch.events
    assert isinstance(first, BlockStored) and first.block_hashes == [11] and first.medium is None
    assert isinstance(second, BlockStored) and second.parent_block_hash == 11 and second.token_ids == [3, 4]
    assert not second.keyed_beyond_tokens()
    assert isinstance(removed, BlockRemoved) and removed.block_hashes == [12] and removed.medium is None
    assert isinstance(cleared, AllBlocksCleared)


def test_decodes_later_sglang_batches_with_medium_rank_and_salt() -> None:
    plain, last = sglang_pages([1, 2, 3, 4, 5], 2)
    salted, _ = sglang_pages([7, 8], 2, parent=last, salt="tenant-a", first_hash=2000)
    payload = msgspec.msgpack.encode(SgEventBatch(1.0, [
        *plain, *salted, SgBlockStored([3000], None, [9, 9], 2, None, "CPU_PINNED"),
        SgBlockRemoved([1000], "GPU"), SgAllBlocksCleared()], attn_dp_rank=0))
    batch = decode_batch(payload)
    assert batch.data_parallel_rank == 0  # SGLang's attn_dp_rank sits where vLLM's rank does
    stored = [e for e in batch.events if isinstance(e, BlockStored)]
    assert [e.block_size for e in stored[:3]] == [2, 2, 1]  # the short last page keeps its own size
    assert [e.parent_block_hash for e in stored[:3]] == [None, 1000, 1001]
    assert not any(e.keyed_beyond_tokens() for e in stored[:3])
    assert stored[3].keyed_beyond_tokens() and stored[3].extra == {"cache_salt": "tenant-a"}
    assert stored[4].medium == "CPU_PINNED"
    assert isinstance(batch.events[-2], BlockRemoved) and batch.events[-2].medium == "GPU"
