"""The fake engine's prefix cache: an LRU of blocks keyed by the router's chained hashes of the
rendered prompt's bytes, which publishes its changes as the built-in engine does (`/v1/kv_events`:
numbered newline-delimited JSON, snapshot first, resumable with ``after``/``instance``).

Evictions are published too, so a router following the stream knows what each fake engine holds. With
``?load=1`` the stream carries load records as the built-in engine's does (supernode.api.kv_load); the
engine state (fake_engine.EngineState) sets ``load`` as its running and waiting counts change.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import StreamingResponse

from supernode.api.kv_load import LOAD_CHANGED, EngineLoad, wants_load
from supernode.router.apis.openai import render_chat
from supernode.router.routing.prefix_index import request_hashes

BLOCK = 64  # bytes of rendered prompt per cache block (the router's default prefix block size)
MAX_BLOCKS = 4096


def prompt_hashes(body: dict[str, Any]) -> list[int]:
    """The prompt's blocks as the router hashes them (`routing.prefix` defaults)."""
    if "messages" in body:
        text = render_chat(body["messages"])
    else:
        p = body.get("prompt", "")
        text = p if isinstance(p, str) else json.dumps(p)
    return list(request_hashes(str(body.get("model", "")), text, block_size=BLOCK, max_blocks=MAX_BLOCKS))


class FakeKVCache:
    def __init__(self, capacity: int, keep_events: int = 100_000):
        self.capacity = capacity
        self.blocks: OrderedDict[int, None] = OrderedDict()
        self.instance = uuid.uuid4().hex
        self.seq = 0
        self.log: deque[dict[str, Any]] = deque(maxlen=keep_events)
        self.subscribers: set[asyncio.Queue[Any]] = set()
        self.load = EngineLoad()
        self.load_interval_s = 0.025

    def __len__(self) -> int:
        return len(self.blocks)

    def prefill(self, hashes: list[int]) -> int:
        """Leading cached blocks of the prompt; then all its blocks are cached (LRU evicts beyond capacity)."""
        hit = 0
        for h in hashes:
            if h not in self.blocks:
                break
            hit += 1
        new = [h for h in hashes if h not in self.blocks]
        for h in hashes:
            self.blocks[h] = None
            self.blocks.move_to_end(h)
        evicted = []
        while len(self.blocks) > self.capacity:
            evicted.append(self.blocks.popitem(last=False)[0])
        kept = [h for h in new if h in self.blocks]
        if kept:
            self._publish("stored", kept)
        gone = [h for h in evicted if h not in new]
        if gone:
            self._publish("removed", gone)
        return hit

    def clear(self) -> None:
        self.blocks.clear()
        self._publish("cleared", [])

    def _publish(self, kind: str, hashes: list[int]) -> None:
        self.seq += 1
        record = {"type": kind, "seq": self.seq, "instance": self.instance, "block_hashes": hashes,
                  "block_size": BLOCK}
        self.log.append(record)
        for q in self.subscribers:
            q.put_nowait(record)

    def backlog(self, after: int | None, instance: str | None) -> list[dict[str, Any]]:
        if after is not None and instance == self.instance and (
                after == self.seq or (self.log and self.log[0]["seq"] <= after + 1)):
            return [r for r in self.log if r["seq"] > after]
        return [{"type": "snapshot", "seq": self.seq, "instance": self.instance, "block_hashes": list(self.blocks),
                 "block_size": BLOCK}]


def add_kv_events_route(app: FastAPI, cache: FakeKVCache) -> None:
    @app.get("/v1/kv_events")
    async def kv_events(request: Request) -> StreamingResponse:
        after = request.query_params.get("after")
        q: asyncio.Queue[Any] = asyncio.Queue()
        first = cache.backlog(int(after) if after and after.isdigit() else None, request.query_params.get("instance"))
        cache.subscribers.add(q)
        load = cache.load.reader(q, cache.load_interval_s) if wants_load(request.query_params.get("load")) else None

        async def body() -> AsyncIterator[str]:
            try:
                for record in first:
                    yield json.dumps(record) + "\n"
                while True:
                    if load is not None and q.empty() and (rec := load.take(cache.instance)) is not None:
                        yield json.dumps(rec) + "\n"
                    try:
                        record = await asyncio.wait_for(q.get(), 5.0 if load is None else load.timeout(5.0))
                    except TimeoutError:  # an owed load record is due (a timeout of 0 never gets an item)
                        rec = load.take(cache.instance) if load is not None else None
                        yield "\n" if rec is None else json.dumps(rec) + "\n"
                        continue
                    if record == LOAD_CHANGED:
                        if load is not None:
                            load.changed()
                        continue
                    yield json.dumps(record) + "\n"
            finally:
                cache.subscribers.discard(q)
                if load is not None:
                    load.close()

        return StreamingResponse(body(), media_type="application/x-ndjson")
