"""Data-parallel ranks behind one endpoint (vLLM, SGLang): one KV event feed per rank on the engines'
offset ports, one cache per rank in the precise index, and requests sent to the rank holding their
prefix by name (vLLM's header, SGLang's request field), with the load guard between ranks."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from supernode.api.endpoints import Endpoint
from supernode.api.hashing import block_hashes
from supernode.api.kv_events import BlockStored, KVEventBatch, encode_batch
from supernode.api.models import EngineType, Mode
from supernode.router.config import HealthConfig, PrefixConfig, RoutingConfig, TimeoutsConfig
from supernode.router.kv_events.feeds import KVEventFeeds, feed_plan
from supernode.router.metrics import RouterMetrics
from supernode.router.proxy import Upstream
from supernode.router.routing.dp_ranks import offset_port, pick_rank, rank_key, with_rank
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.profile import build_profile
from supernode.router.routing.state import EndpointState, EndpointTable, RoutingRequest
from tests.api.test_api_kv_events_sglang import SgEventBatch, sglang_pages
from tests.router.test_router_kv_events import Publisher, until

MODEL, BS = "m", 4


# --- pure parts ----------------------------------------------------------------------------------------
def test_rank_ports_and_rank_hints_per_engine() -> None:
    assert offset_port("tcp://10.0.0.7:5557", 3) == "tcp://10.0.0.7:5560"
    assert offset_port("tcp://[fd00::7]:5557", 1) == "tcp://[fd00::7]:5558" and offset_port("", 2) == ""
    body = json.dumps({"model": "m", "data_parallel_rank": 0}, separators=(",", ":")).encode()
    assert with_rank(EngineType.VLLM, body, 2) == (body, {"X-data-parallel-rank": "2"})
    sent, headers = with_rank(EngineType.SGLANG, body, 2)
    assert headers == {} and json.loads(sent)["data_parallel_rank"] == 2  # ours comes last and wins
    assert json.loads(with_rank(EngineType.SGLANG, b"{}", 1)[0]) == {"data_parallel_rank": 1}
    for engine in (EngineType.BUILTIN, EngineType.MINDIE):
        assert with_rank(engine, body, 2) == (body, {})
    assert with_rank(EngineType.VLLM, body, None) == (body, {})

async def send_prompt(upstream: Upstream, tokens: list[int]) -> None:
    """One /v1/completions request of ``tokens`` through the router's upstream (routed by their block hashes)."""
    req = RoutingRequest("r", MODEL, Mode.NON_THINK, token_block_hashes=tuple(block_hashes(tokens, MODEL, BS)),
                         prompt_tokens=len(tokens))
    opened = await upstream.open(req, "/v1/completions", {"model": MODEL, "prompt_tokens": tokens}, stream=False)
    await opened.close()



def test_rank_pick_follows_the_prefix_and_yields_to_load_like_endpoints_do() -> None:
    assert pick_rank([0, 5, 3], [0, 0, 0], 8, 1.25) == 1
    assert pick_rank([0, 0, 0], [0, 0, 0], 8, 1.25) is None  # nothing cached: the engine balances
    assert pick_rank([0, 5, 3], [0, 9, 0], 8, 1.25) == 2  # rank 1 overloaded: the next best holder
    assert pick_rank([0, 5, 0], [0, 9, 0], 8, 1.25) is None
    assert pick_rank([4, 4], [3, 1], 8, 1.25) == 1  # equal prefixes: the less loaded rank


def test_index_keeps_ranks_apart_and_scores_by_what_the_engine_can_be_told() -> None:
    index, url = PreciseIndex(), "http://e"
    prompt = block_hashes(list(range(16)), MODEL, BS)
    index.set_ranks(url, 2, pinnable=True)
    index.set_precise(rank_key(url, 0), True)
    assert not index.is_precise(url)  # rank 1's history is not complete yet
    index.set_precise(rank_key(url, 1), True)
    index.store(rank_key(url, 1), [(h, h) for h in prompt])
    assert index.is_precise(url) and index.rank_matches(url, prompt) == [0, 4]
    assert index.match(url, prompt) == 4 and index.size(url) == 4
    index.set_ranks(url, 2, pinnable=False)  # the engine picks the rank itself: expected reuse
    assert index.match(url, prompt) == 2
    index.drop(url)
    assert index.ranks(url) == 1 and index.size(rank_key(url, 1)) == 0 and not index.is_precise(rank_key(url, 1))


def test_feed_plan_one_feed_per_rank_on_offset_ports_zmq_only() -> None:
    ep = Endpoint(url="http://e", model=MODEL, engine_type=EngineType.VLLM, kv_events="tcp://h:7000",
                  kv_events_replay="tcp://h:7100", data_parallel_size=3)
    assert feed_plan(EndpointState(ep), True) == {
        rank_key("http://e", r): (f"tcp://h:{7000 + r}", f"tcp://h:{7100 + r}", MODEL) for r in range(3)}
    assert list(feed_plan(EndpointState(ep.model_copy(update={"kv_events": "none"})), True)) == ["http://e"]
    assert list(feed_plan(EndpointState(ep.model_copy(update={"data_parallel_size": 1})), True)) == ["http://e"]


# --- live: per-rank publishers, feeds, routing -----------------------------------------------------------
def consecutive_ports(n: int) -> int:
    """A base port with ``n`` free ports from it (the engines bind rank r on base + r)."""
    for _ in range(100):
        socks: list[socket.socket] = []
        try:
            first = socket.socket()
            socks.append(first)
            first.bind(("127.0.0.1", 0))
            base = first.getsockname()[1]
            if base + n > 65535:
                continue
            for r in range(1, n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + r))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def vllm_stored(tokens: list[int], rank: int) -> bytes:
    hashes = block_hashes(tokens, "engine-own-seed", BS)
    return encode_batch(KVEventBatch(0.0, [BlockStored(hashes, None, tokens, BS, None, "GPU")], rank))


def sglang_stored(tokens: list[int], rank: int) -> bytes:
    pages, _ = sglang_pages(tokens, 1)  # one BlockStored per one-token page, chained
    return msgspec.msgpack.encode(SgEventBatch(0.0, pages, attn_dp_rank=rank))


def empty(engine: EngineType, rank: int) -> bytes:
    if engine == EngineType.SGLANG:
        return msgspec.msgpack.encode(SgEventBatch(0.0, [], attn_dp_rank=rank))
    return encode_batch(KVEventBatch(0.0, [], rank))


class FakeDPEngine:
    """An engine with one publisher per data-parallel rank: it runs a request on the rank named in it, else
    on its own choice (round robin), and publishes the prompt's blocks from that rank."""

    def __init__(self, engine: EngineType, ranks: int, pub: int, replay: int, hosts: list[str] | None = None):
        self.engine, self.ranks = engine, ranks
        self.hosts = hosts or ["127.0.0.1"] * ranks  # the host each rank publishes from (its pod's IP)
        self.publishers = [Publisher(None, addresses=(f"tcp://{h}:{pub + r}", f"tcp://{h}:{replay + r}"))
                           for r, h in enumerate(self.hosts)]
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.ran_on: list[int] = []
        self._next = 0

    def named_rank(self, headers: dict[str, str], body: dict[str, Any]) -> int | None:
        raw = headers.get("X-data-parallel-rank") if self.engine == EngineType.VLLM else body.get("data_parallel_rank")
        return None if raw is None else int(raw)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        headers = dict(request.headers)
        self.seen.append((headers, body))
        rank = self.named_rank(headers, body)
        if rank is None:
            rank, self._next = self._next, (self._next + 1) % self.ranks
        self.ran_on.append(rank)
        stored = sglang_stored if self.engine == EngineType.SGLANG else vllm_stored
        await self.publishers[rank].send(stored(body["prompt_tokens"], rank))
        return web.json_response({"id": "x", "choices": []})

    def close(self) -> None:
        for p in self.publishers:
            p.close()


@pytest.fixture
async def http_engine() -> AsyncIterator[Callable[[FakeDPEngine], Any]]:
    runners: list[web.AppRunner] = []

    async def start(engine: FakeDPEngine) -> str:
        app = web.Application()
        app.router.add_post("/v1/completions", engine.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("engine", [EngineType.VLLM, EngineType.SGLANG])
async def test_a_follow_up_goes_to_the_rank_that_holds_its_prefix(
        engine: EngineType, http_engine: Callable[[FakeDPEngine], Any]) -> None:
    ranks = 3
    pub = consecutive_ports(2 * ranks)
    replay = pub + ranks
    fake = FakeDPEngine(engine, ranks, pub, replay)
    url = await http_engine(fake)
    table, metrics = EndpointTable(), RouterMetrics()
    profile = build_profile(RoutingConfig())
    table.update([Endpoint(url=url, model=MODEL, engine_type=engine, kv_events=f"tcp://127.0.0.1:{pub}",
                           kv_events_replay=f"tcp://127.0.0.1:{replay}", data_parallel_size=ranks)])
    feeds = KVEventFeeds(table, profile.precise, metrics, PrefixConfig(), block_size_of=lambda _: BS)
    async with aiohttp.ClientSession() as session:
        feeds.start(session)
        upstream = Upstream(session, table, profile, metrics, TimeoutsConfig(), HealthConfig(), max_attempts=1)
        try:
            for _ in range(200):  # late joiners replay from batch 0: every rank's history complete
                if profile.precise.is_precise(url):
                    break
                for r, p in enumerate(fake.publishers):
                    await p.send(empty(engine, r))
                await asyncio.sleep(0.05)
            assert profile.precise.is_precise(url)
            assert metrics.prefix_index_mode.labels(url, "precise")._value.get() == 1.0
            assert metrics.prefix_index_ranks.labels(url)._value.get() == ranks

            async def send(tokens: list[int]) -> None:
                await send_prompt(upstream, tokens)

            conversations = [list(range(c * 100, c * 100 + 16)) for c in range(ranks)]
            for turn in conversations:  # new prompts: no rank named, the engine spreads them
                await send(turn)
            assert [fake.named_rank(*s) for s in fake.seen] == [None] * ranks and fake.ran_on == [0, 1, 2]
            for r, turn in enumerate(conversations):
                await until(lambda r=r, t=turn: profile.precise.rank_matches(
                    url, block_hashes(t, MODEL, BS)) == [4 if i == r else 0 for i in range(ranks)])
            for turn in reversed(conversations):  # follow-ups: each to the rank holding its conversation
                await send(turn + list(range(900, 908)))
            assert [fake.named_rank(*s) for s in fake.seen[ranks:]] == [2, 1, 0]
            assert all(not state.rank_inflight for state in table)  # every pinned request released
        finally:
            await feeds.close()
            fake.close()


async def test_a_publisher_on_another_ranks_port_is_refused() -> None:
    ranks = 2
    pub = consecutive_ports(2 * ranks)
    replay = pub + ranks
    fake = FakeDPEngine(EngineType.VLLM, ranks, pub, replay)
    table, metrics, index = EndpointTable(), RouterMetrics(), PreciseIndex()
    url = "http://127.0.0.1:1"
    table.update([Endpoint(url=url, model=MODEL, engine_type=EngineType.VLLM, kv_events=f"tcp://127.0.0.1:{pub}",
                           kv_events_replay=f"tcp://127.0.0.1:{replay}", data_parallel_size=ranks)])
    feeds = KVEventFeeds(table, index, metrics, PrefixConfig(), block_size_of=lambda _: BS)
    async with aiohttp.ClientSession() as session:
        feeds.start(session)
        try:
            for _ in range(100):  # rank 1's port signs as rank 0
                if metrics.kv_event_errors.labels(url)._value.get():
                    break
                await fake.publishers[0].send(empty(EngineType.VLLM, 0))
                await fake.publishers[1].send(empty(EngineType.VLLM, 0))
                await asyncio.sleep(0.05)
            assert metrics.kv_event_errors.labels(url)._value.get() == 1 and not index.is_precise(url)
        finally:
            await feeds.close()
            fake.close()
