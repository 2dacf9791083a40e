"""Live: a data-parallel endpoint whose ranks publish from two pods (127.0.0.1 for the leader's ranks,
127.0.0.2 for the worker's, each rank on the configured port plus its global rank). The router follows
each rank at the address discovery announced, stays approximate while a rank's pod is unknown, and sends
a follow-up to the rank that holds its prefix through the leader's HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from supernode.api.endpoints import Endpoint
from supernode.api.hashing import block_hashes
from supernode.api.models import EngineType
from supernode.router.config import HealthConfig, PrefixConfig, RoutingConfig, TimeoutsConfig
from supernode.router.kv_events.feeds import KVEventFeeds
from supernode.router.metrics import RouterMetrics
from supernode.router.proxy import Upstream
from supernode.router.routing.dp_ranks import rank_key
from supernode.router.routing.profile import build_profile
from supernode.router.routing.state import EndpointTable
from tests.router.test_router_dp_ranks import (
    BS,
    MODEL,
    FakeDPEngine,
    consecutive_ports,
    empty,
    http_engine,
    send_prompt,
)
from tests.router.test_router_kv_events import until

__all__ = ["http_engine"]  # the fixture, used by name
HOSTS = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"]  # DP 4 over two pods, two ranks each


@pytest.mark.parametrize("engine", [EngineType.VLLM, EngineType.SGLANG])
async def test_ranks_on_two_pods_are_followed_where_they_publish(
        engine: EngineType, http_engine: Callable[[FakeDPEngine], Any]) -> None:
    ranks = len(HOSTS)
    pub = consecutive_ports(2 * ranks)
    replay = pub + ranks
    fake = FakeDPEngine(engine, ranks, pub, replay, hosts=HOSTS)
    url = await http_engine(fake)
    pubs = [f"tcp://{h}:{pub + r}" for r, h in enumerate(HOSTS)]
    replays = [f"tcp://{h}:{replay + r}" for r, h in enumerate(HOSTS)]

    def announce(known: int) -> Endpoint:  # discovery's view: ranks past `known` on a pod not ready yet
        return Endpoint(url=url, model=MODEL, engine_type=engine, kv_events=pubs[0], kv_events_replay=replays[0],
                        data_parallel_size=ranks, rank_kv_events=[p if r < known else "" for r, p in enumerate(pubs)],
                        rank_kv_events_replay=[p if r < known else "" for r, p in enumerate(replays)])

    table, metrics = EndpointTable(), RouterMetrics()
    profile = build_profile(RoutingConfig())
    table.update([announce(2)])
    feeds = KVEventFeeds(table, profile.precise, metrics, PrefixConfig(), block_size_of=lambda _: BS)

    async def publish_until(done: Callable[[], bool]) -> None:  # late joiners replay from batch 0
        for _ in range(200):
            if done():
                return
            for r, p in enumerate(fake.publishers):
                await p.send(empty(engine, r))
            await asyncio.sleep(0.05)
        raise AssertionError("histories not complete")

    async with aiohttp.ClientSession() as session:
        feeds.start(session)
        upstream = Upstream(session, table, profile, metrics, TimeoutsConfig(), HealthConfig(), max_attempts=1)
        try:
            await publish_until(lambda: all(profile.precise.is_precise(rank_key(url, r)) for r in (0, 1)))
            assert not profile.precise.is_precise(url)  # ranks 2 and 3 have no feed: approximate
            assert metrics.prefix_index_mode.labels(url, "approximate")._value.get() == 1.0
            table.update([announce(ranks)])  # the worker pod is ready: its ranks are announced
            feeds.sync()
            await publish_until(lambda: profile.precise.is_precise(url))
            assert metrics.prefix_index_mode.labels(url, "precise")._value.get() == 1.0

            async def send(tokens: list[int]) -> None:
                await send_prompt(upstream, tokens)

            conversations = [list(range(c * 100, c * 100 + 16)) for c in range(ranks)]
            for turn in conversations:  # new prompts: the engine spreads them, rank r publishes from its pod
                await send(turn)
            assert fake.ran_on == [0, 1, 2, 3]
            for r, turn in enumerate(conversations):
                await until(lambda r=r, t=turn: profile.precise.rank_matches(
                    url, block_hashes(t, MODEL, BS)) == [4 if i == r else 0 for i in range(ranks)])
            for turn in reversed(conversations):  # follow-ups: to the rank (and pod) holding the conversation
                await send(turn + list(range(900, 908)))
            assert [fake.named_rank(*s) for s in fake.seen[ranks:]] == [3, 2, 1, 0]
        finally:
            await feeds.close()
            fake.close()
