"""Engines' request counts shared between router replicas through the KV event feed (load records):
a replica sees another replica's requests on an engine without a metrics scrape, and falls back to
the scrape when the feed carries no load."""

from __future__ import annotations

from pathlib import Path

import httpx
from fake_engine import Behaviour
from router_stack import MODEL, Stack, ep, wait_for

from supernode.api.endpoints import Endpoint
from supernode.router.routing.state import EndpointState, EngineStats


async def test_a_replica_sees_another_replicas_requests_through_the_feed(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        url = await stack.engine("e", Behaviour(name="e", hang_after_first_chunk=True))
        stack.write_endpoints([ep(url)])
        replicas = []
        for _ in range(2):  # no scraping (scrape_interval_s 0): only the feed tells a replica of others
            await stack.router()
            assert stack.router_app is not None
            replicas.append((stack.router_url, stack.router_app.state.router.table))
        (url_a, table_a), (_, table_b) = replicas

        def state(table: object) -> EndpointState | None:
            return table.get(url)  # type: ignore[attr-defined,no-any-return]

        await wait_for(lambda: all((s := state(t)) is not None and s.load_fed for _, t in replicas))
        async with httpx.AsyncClient(timeout=10) as client, client.stream(
                "POST", f"{url_a}/v1/chat/completions",
                json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200
            async for _ in r.aiter_lines():
                break  # the request holds a slot on the engine now
            b, a = state(table_b), state(table_a)
            assert b is not None and a is not None
            await wait_for(lambda: b.load == 1)
            assert b.inflight == 0 and b.stats.foreign == 1  # replica A's request, seen by B
            assert a.load == 1 and a.inflight == 1  # A's own request, not counted twice
        await wait_for(lambda: b.load == 0 and a.load == 0)
    finally:
        await stack.close()


def test_the_scrape_counts_others_only_while_no_feed_carries_load() -> None:
    s = EndpointState(Endpoint(url="http://e", model="m"))
    s.inflight = 1
    s.apply_scrape(EngineStats(running=3, waiting=1, scraped=True))
    assert s.load == 4  # scrape fallback: 3 others + our 1
    s.apply_engine_load(2)
    assert s.load == 2 and s.load_fed  # the feed's total replaces the scrape's
    s.apply_scrape(EngineStats(running=9, waiting=9, scraped=True))
    assert s.load == 2 and s.stats.running == 9  # a stale scrape does not override the live feed
    s.apply_engine_load(None)  # the feed stopped
    s.apply_scrape(EngineStats(running=5, scraped=True))
    assert s.load == 5
