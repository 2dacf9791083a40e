"""KV events in: the precise index follows what engines report — resync on a gap, engine restarts,
vLLM-format batches re-hashed into the router's chain, malformed input → approximate, and scoring."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import zmq
import zmq.asyncio
from aiohttp import web
from polling import until

from supernode.api.endpoints import Endpoint
from supernode.api.hashing import block_hashes
from supernode.api.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch, encode_batch, seq_bytes
from supernode.api.models import Mode
from supernode.router.kv_events.apply import BadEvents, StreamPosition, apply_batch, apply_stream_record
from supernode.router.kv_events.http_feed import HttpFeed
from supernode.router.kv_events.zmq_feed import ZmqFeed
from supernode.router.metrics import RouterMetrics
from supernode.router.routing.plugins import LoadGuard, PrefixScorer
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.prefix_index import PrefixIndex
from supernode.router.routing.state import EndpointState, RoutingRequest
from tests.api.test_api_kv_events_wire import MainBlockStored, MainKVEventBatch

MODEL = "m"
BS = 4
URL = "http://engine-a"


def rec(kind: str, seq: int, hashes: list[int], instance: str = "i1") -> dict[str, Any]:
    return {"type": kind, "seq": seq, "instance": instance, "block_hashes": hashes, "block_size": BS}


def test_stream_snapshot_changes_gap_and_restart() -> None:
    index, pos = PreciseIndex(), StreamPosition()
    assert apply_stream_record(index, URL, pos, rec("snapshot", 5, [1, 2])) == "applied"
    assert apply_stream_record(index, URL, pos, rec("stored", 6, [3])) == "applied"
    assert apply_stream_record(index, URL, pos, rec("removed", 7, [1])) == "applied"
    assert index.match(URL, [2]) == 1 and index.match(URL, [1]) == 0 and index.size(URL) == 2
    assert apply_stream_record(index, URL, pos, rec("stored", 9, [4])) == "gap"  # 8 went missing
    assert apply_stream_record(index, URL, pos, rec("stored", 8, [4], instance="i2")) == "gap"  # another engine
    apply_stream_record(index, URL, pos, rec("snapshot", 0, [9], instance="i2"))  # the restarted engine's state
    assert index.size(URL) == 1 and index.match(URL, [9]) == 1 and index.match(URL, [2]) == 0


@pytest.mark.parametrize(("record", "field"), [
    ([1], "event"), (rec("exploded", 1, []), "type"), ({**rec("stored", 1, []), "seq": "1"}, "seq"),
    ({**rec("stored", 1, []), "instance": ""}, "instance"), (rec("stored", 1, ["x"]), "block_hashes"),  # type: ignore[list-item]
])
def test_malformed_stream_records_name_the_field(record: Any, field: str) -> None:
    with pytest.raises(BadEvents, match=field):
        apply_stream_record(PreciseIndex(), URL, StreamPosition(), record)


def test_vllm_batches_are_rehashed_into_the_routers_chain() -> None:
    """vLLM names blocks by its own hashes (bytes here); the index keys them by the router's chain."""
    tokens = list(range(10, 22))  # three blocks of 4
    mine = block_hashes(tokens, MODEL, BS)
    theirs = [bytes([i]) * 32 for i in range(3)]
    index = PreciseIndex()
    first = msgspec.msgpack.encode(MainKVEventBatch(1.0, [
        MainBlockStored(theirs[:2], None, tokens[:8], BS, None, "GPU", None)]))
    second = msgspec.msgpack.encode(MainKVEventBatch(2.0, [
        MainBlockStored(theirs[2:], theirs[1], tokens[8:], BS, None, "GPU", None)]))
    from supernode.api.kv_events import decode_batch

    for payload in (first, second):
        apply_batch(index, URL, MODEL, decode_batch(payload))
    assert index.match(URL, mine) == 3
    apply_batch(index, URL, MODEL, KVEventBatch(3.0, [BlockRemoved([theirs[1]], "GPU")]))
    assert index.match(URL, mine) == 1
    apply_batch(index, URL, MODEL, KVEventBatch(4.0, [BlockStored([99], 12345, [1, 2, 3, 4], BS)]))
    assert index.size(URL) == 2  # an unknown parent: unreachable, skipped
    with pytest.raises(BadEvents, match="token_ids"):
        apply_batch(index, URL, MODEL, KVEventBatch(5.0, [BlockStored([98], None, [1, 2], BS)]))
    apply_batch(index, URL, MODEL, KVEventBatch(6.0, [AllBlocksCleared()]))
    assert index.size(URL) == 0


def test_scorer_uses_reported_blocks_for_precise_endpoints_only() -> None:
    approx, precise = PrefixIndex(1000), PreciseIndex()
    a, b = (EndpointState(Endpoint(url=u, model=MODEL)) for u in ("http://a", "http://b"))
    tokens = list(range(16))
    req = RoutingRequest("r", MODEL, Mode.NON_THINK, block_hashes=(1, 2, 3, 4),
                         token_block_hashes=tuple(block_hashes(tokens, MODEL, BS)))
    approx.insert(a.key, [1, 2, 3, 4])  # the approximate guess: a holds it all
    approx.insert(b.key, [1, 2])
    precise.store(a.key, [(h, h) for h in req.token_block_hashes[:1]])  # a's engine: only one block
    scorer = PrefixScorer(approx, LoadGuard(), precise)
    assert scorer.score(req, [a, b]) == [1.0, 0.5]  # a is not precise yet: both approximate
    precise.set_precise(a.key, True)
    assert scorer.score(req, [a, b]) == [0.25, 0.5]  # a: what its engine reported; b: approximate


# --- the built-in engine's HTTP stream --------------------------------------------------------------
class ScriptedEngine:
    """/v1/kv_events answering each connection with the next script (lines, then the stream ends)."""

    def __init__(self, scripts: list[list[bytes]]):
        self.scripts = scripts
        self.queries: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        lines = self.scripts.pop(0) if self.scripts else []
        resp = web.StreamResponse()
        await resp.prepare(request)
        for line in lines:
            await resp.write(line + b"\n")
        if not self.scripts:
            await asyncio.sleep(3600)  # the last script stays open
        return resp


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[list[list[bytes]]], Any]]:
    runners: list[web.AppRunner] = []

    async def start(scripts: list[list[bytes]]) -> tuple[str, ScriptedEngine]:
        engine = ScriptedEngine(scripts)
        app = web.Application()
        app.router.add_get("/v1/kv_events", engine.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}", engine

    yield start
    for r in runners:
        await r.cleanup()


def line(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


async def test_http_feed_resyncs_on_gap_and_drops_a_restarted_engines_blocks(scripted: Any) -> None:
    url, engine = await scripted([
        [line(rec("snapshot", 3, [1, 2])), line(rec("stored", 4, [3])), line(rec("stored", 6, [4]))],  # 5 lost
        [line(rec("snapshot", 6, [1, 2, 3, 4]))],  # the resync; then the engine goes away
        [line(rec("snapshot", 0, [7], instance="i2"))],  # restarted engine, resumed request refused
    ])
    index, metrics = PreciseIndex(), RouterMetrics()
    feed = HttpFeed(url, index, aiohttp.ClientSession(), hooks=metrics, retry_s=0.01, bad_input_retry_s=60)
    task = asyncio.create_task(feed.run())
    try:
        await until(lambda: len(engine.queries) == 3 and index.size(url) == 1)
        assert engine.queries[1] == {"format": "ndjson", "load": "1"}  # after the gap: no resume, a snapshot
        assert engine.queries[2] == {"format": "ndjson", "load": "1", "after": "6", "instance": "i1"}  # resume
        assert index.match(url, [7]) == 1 and index.match(url, [1]) == 0  # the old instance's blocks left
        assert index.is_precise(url)
        assert metrics.prefix_index_mode.labels(url, "precise")._value.get() == 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await feed.session.close()


async def test_http_feed_falls_back_to_approximate_on_malformed_events(scripted: Any) -> None:
    url, engine = await scripted([[line(rec("snapshot", 1, [1, 2])), b"{not json"], []])
    index, metrics = PreciseIndex(), RouterMetrics()
    feed = HttpFeed(url, index, aiohttp.ClientSession(), hooks=metrics, retry_s=0.01, bad_input_retry_s=60)
    task = asyncio.create_task(feed.run())
    try:
        await until(lambda: metrics.kv_event_errors.labels(url)._value.get() == 1)
        await until(lambda: not index.is_precise(url))
        assert index.size(url) == 0 and len(engine.queries) == 1  # and no retry storm: it waits bad_input_retry_s
        assert metrics.prefix_index_mode.labels(url, "approximate")._value.get() == 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await feed.session.close()


# --- vLLM's ZMQ publisher -----------------------------------------------------------------------------
def stored(tokens: list[int], parent: int | None = None) -> bytes:
    hashes = block_hashes(tokens, "engine-own-seed", BS)  # not the router's chain: it must re-hash
    return encode_batch(KVEventBatch(0.0, [BlockStored(hashes, parent, tokens, BS, None, "GPU")]))


class Publisher:
    """A vLLM-style publisher under test control: PUB plus a ROUTER that replays what it kept."""

    def __init__(self, tmp: Path | None, keep_from: int = 0, *, addresses: tuple[str, str] | None = None):
        ctx = zmq.asyncio.Context.instance()
        self.address, self.replay_address = addresses or (f"ipc://{tmp}/pub", f"ipc://{tmp}/replay")
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(self.address)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(self.replay_address)
        self.sent: list[tuple[int, bytes]] = []
        self.keep_from = keep_from
        self.task = asyncio.create_task(self._serve())

    async def send(self, payload: bytes, *, drop: bool = False) -> None:
        seq = len(self.sent)
        self.sent.append((seq, payload))
        if not drop:
            await self.pub.send_multipart((b"", seq_bytes(seq), payload))

    async def _serve(self) -> None:
        from supernode.api.kv_events import END_SEQ

        while True:
            client, _, start = await self.router.recv_multipart()
            for seq, payload in self.sent:
                if seq >= max(int.from_bytes(start, "big"), self.keep_from):
                    await self.router.send_multipart((client, b"", seq_bytes(seq), payload))
            await self.router.send_multipart((client, b"", END_SEQ, b""))

    def close(self) -> None:
        self.task.cancel()
        self.pub.close(0)
        self.router.close(0)


async def test_zmq_feed_replays_a_gap_and_follows_an_engine_restart(tmp_path: Path) -> None:
    index, metrics = PreciseIndex(), RouterMetrics()
    a, b = list(range(100, 108)), list(range(200, 204))
    pub = Publisher(tmp_path)
    feed = ZmqFeed(URL, MODEL, pub.address, pub.replay_address, index, hooks=metrics, bad_input_retry_s=60)
    task = asyncio.create_task(feed.run())
    try:
        await pub.send(encode_batch(KVEventBatch(0.0, [AllBlocksCleared()])), drop=True)  # before we joined
        await pub.send(stored(a), drop=True)
        while not index.is_precise(URL):  # the late joiner replays from 0: complete history
            await pub.send(encode_batch(KVEventBatch(0.0, [])))
            await asyncio.sleep(0.05)
        assert index.match(URL, block_hashes(a, MODEL, BS)) == 2
        await pub.send(stored(b), drop=True)  # a gap, filled by the replay when the next batch comes
        await pub.send(encode_batch(KVEventBatch(0.0, [])))
        await until(lambda: index.match(URL, block_hashes(b, MODEL, BS)) == 1)
        for _ in range(30):  # well ahead of where the restarted engine's numbers will be when we notice
            await pub.send(encode_batch(KVEventBatch(0.0, [])))
        await until(lambda: feed.expected == len(pub.sent))
        pub.close()

        restarted = Publisher(tmp_path)  # the engine restarted: sequence numbers start over
        await until(lambda: feed.expected is not None)
        while index.match(URL, block_hashes(a, MODEL, BS)):
            await restarted.send(encode_batch(KVEventBatch(0.0, [])))
            await asyncio.sleep(0.05)
        assert index.size(URL) == 0 and index.is_precise(URL)
        restarted.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_zmq_feed_gap_beyond_replay_goes_approximate(tmp_path: Path) -> None:
    index, metrics = PreciseIndex(), RouterMetrics()
    pub = Publisher(tmp_path, keep_from=2)  # the replay buffer lost batches 0 and 1
    feed = ZmqFeed(URL, MODEL, pub.address, pub.replay_address, index, hooks=metrics, bad_input_retry_s=60)
    task = asyncio.create_task(feed.run())
    try:
        await pub.send(stored(list(range(4))), drop=True)
        await pub.send(stored(list(range(8, 12))), drop=True)
        while feed.expected is None:
            await pub.send(stored(list(range(20, 24))))
            await asyncio.sleep(0.05)
        assert not index.is_precise(URL)
        assert metrics.prefix_index_mode.labels(URL, "approximate")._value.get() == 1.0
        await pub.send(encode_batch(KVEventBatch(0.0, [AllBlocksCleared()])))  # e.g. a prefix cache reset
        await until(lambda: index.is_precise(URL))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        pub.close()


async def test_zmq_feed_malformed_batch_falls_back(tmp_path: Path) -> None:
    index, metrics = PreciseIndex(), RouterMetrics()
    pub = Publisher(tmp_path)
    feed = ZmqFeed(URL, MODEL, pub.address, pub.replay_address, index, hooks=metrics, bad_input_retry_s=60)
    task = asyncio.create_task(feed.run())
    try:
        while not index.is_precise(URL):
            await pub.send(encode_batch(KVEventBatch(0.0, [])))
            await asyncio.sleep(0.05)
        await pub.send(b"\xc1 garbage")
        await until(lambda: metrics.kv_event_errors.labels(URL)._value.get() == 1)
        assert not index.is_precise(URL) and index.size(URL) == 0 and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        pub.close()
