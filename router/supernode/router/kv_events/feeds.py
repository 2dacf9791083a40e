"""One KV event feed per endpoint, started and stopped as discovery changes the endpoint table.

Owned by the router's lifespan (`start` / `close`). Every router replica runs its own feeds on the
same engine streams, so replicas hold the same precise index without talking to each other.
The built-in engine's stream also carries its request count (load records), which becomes the
endpoint's load here (routing.state.EndpointState.apply_engine_load). Endpoints without events
(their engine publishes none, or `kv_events: none`) are approximate. An endpoint with several
data-parallel ranks publishing apart (vLLM, SGLang) gets one feed per rank (routing/dp_ranks.py); it is
precise while every rank's feed is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiohttp

from supernode.router.config import PrefixConfig
from supernode.router.kv_events.apply import FeedHooks
from supernode.router.kv_events.http_feed import HttpFeed
from supernode.router.kv_events.zmq_feed import ZmqFeed
from supernode.router.routing.dp_ranks import PINNABLE, offset_port, rank_key
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.state import EndpointState, EndpointTable

log = logging.getLogger("supernode.router.kv_events")


def feed_source(state: EndpointState, enabled: bool) -> tuple[str, str, str]:
    """What identifies an endpoint's feed: (source, replay address, model); a change restarts the feed."""
    ep = state.endpoint
    return ep.kv_events_source() if enabled else "none", ep.kv_events_replay, ep.model


def feed_plan(state: EndpointState, enabled: bool) -> dict[str, tuple[str, str, str]]:
    """Feed key → source of every feed an endpoint needs: one, or one per data-parallel rank for a ZMQ
    publisher, keyed ``rank_key(endpoint, r)``: rank r at the endpoint's ``rank_kv_events[r]`` when discovery
    lists them (ranks on several pods; '' → no feed, so the endpoint stays approximate), else on the
    publisher's and the replay's port + r."""
    source = feed_source(state, enabled)
    ep = state.endpoint
    ranks = ep.data_parallel_size
    address, replay, model = source
    if ranks == 1 or not address.startswith("tcp://"):
        return {state.key: source}
    if ep.rank_kv_events:
        replays = ep.rank_kv_events_replay or [""] * ranks
        return {rank_key(state.key, r): (pub or "none", replays[r] if pub else "", model)
                for r, pub in enumerate(ep.rank_kv_events)}
    return {rank_key(state.key, r): (offset_port(address, r), offset_port(replay, r), model) for r in range(ranks)}


class RankHooks:
    """A rank's feed reports for its endpoint: precise once every rank's feed is, malformed input by name."""

    def __init__(self, hooks: FeedHooks, index: PreciseIndex, endpoint: str):
        self.hooks, self.index, self.endpoint = hooks, index, endpoint

    def set_prefix_mode(self, key: str, precise: bool) -> None:
        self.hooks.set_prefix_mode(self.endpoint, self.index.is_precise(self.endpoint))

    def kv_events_malformed(self, key: str) -> None:
        self.hooks.kv_events_malformed(self.endpoint)

    def set_prefix_ranks(self, key: str, ranks: int) -> None:
        self.hooks.set_prefix_ranks(self.endpoint, ranks)


class KVEventFeeds:
    def __init__(self, table: EndpointTable, index: PreciseIndex, hooks: FeedHooks, config: PrefixConfig,
                 seed_of: Callable[[str], str] = str, block_size_of: Callable[[str], int | None] = lambda _: None):
        self.table = table
        self.seed_of = seed_of
        self.block_size_of = block_size_of  # model → the router's block size for it (its tokenizer's), if known
        self.index = index
        self.hooks = hooks
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self._feeds: dict[str, tuple[tuple[str, str, str], asyncio.Task[None]]] = {}
        self._ranked: set[str] = set()  # endpoints followed rank by rank

    def start(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.sync()

    def sync(self) -> None:
        """Match the running feeds to the table (call after each discovery update)."""
        if self.session is None:
            return
        wanted: dict[str, tuple[str, str, str]] = {}
        owner: dict[str, str] = {}  # feed key → its endpoint's key
        rank: dict[str, int] = {}  # feed key → the data-parallel rank it follows (endpoints with several)
        plans = [(s, feed_plan(s, self.config.kv_events)) for s in self.table]
        for s, plan in plans:
            wanted.update(plan)
            owner.update(dict.fromkeys(plan, s.key))
            if len(plan) > 1:
                rank.update((key, r) for r, key in enumerate(plan))
        for key, (source, task) in list(self._feeds.items()):
            if wanted.get(key) != source:
                task.cancel()
                del self._feeds[key]
                self.index.drop(key)
                self._load_sink(key)(None)
        ranked = {s.key for s, plan in plans if len(plan) > 1}
        for s, plan in plans:
            if len(plan) > 1 or s.key in self._ranked:
                self.index.set_ranks(s.key, len(plan), s.endpoint.engine_type in PINNABLE)
                self.hooks.set_prefix_ranks(s.key, len(plan))
        for gone in self._ranked - set(owner.values()):
            self.index.set_ranks(gone, 1, False)
        self._ranked = ranked
        for key, source in wanted.items():
            if key in self._feeds:
                continue
            endpoint = owner[key]
            self.hooks.set_prefix_mode(endpoint, False)  # approximate until a feed holds the engine's history
            if source[0] != "none":
                if source[0] != "http":
                    log.info("KV events for %s: subscribing to %s (replay: %s)", key, source[0], source[1] or "none")
                hooks = self.hooks if key == endpoint else RankHooks(self.hooks, self.index, endpoint)
                self._feeds[key] = (source, asyncio.create_task(self._run(key, source, hooks, rank.get(key)),
                                                                name=f"kv-events {key}"))

    async def _run(self, key: str, source: tuple[str, str, str], hooks: FeedHooks, rank: int | None) -> None:
        address, replay, model = source
        cfg = self.config
        try:
            if address == "http":
                assert self.session is not None
                await HttpFeed(key, self.index, self.session, hooks=hooks, retry_s=cfg.kv_events_retry_s,
                               bad_input_retry_s=cfg.kv_events_bad_input_retry_s, on_load=self._load_sink(key)).run()
            else:
                await ZmqFeed(key, model, address, replay, self.index, hooks=hooks,
                              bad_input_retry_s=cfg.kv_events_bad_input_retry_s, seed_of=self.seed_of,
                              router_block_size=self.block_size_of(model), rank=rank).run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in a feed: this endpoint routes approximately, the router keeps serving
            log.exception("KV event feed for %s failed; approximate routing for it", key)
            self.index.drop(key)
            hooks.set_prefix_mode(key, False)
            self._load_sink(key)(None)

    def _load_sink(self, key: str) -> Callable[[int | None], None]:
        """Where the feed of ``key`` reports the engine's request count (None: unknown, scrape again)."""

        def apply(total: int | None) -> None:
            if (state := self.table.get(key)) is not None:
                state.apply_engine_load(total)

        return apply

    async def close(self) -> None:
        tasks = [task for _, task in self._feeds.values()]
        self._feeds.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
