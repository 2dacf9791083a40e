"""Upstream calls: pick an endpoint, send, retry on another endpoint while nothing reached the client.

A failure before the first byte (connect error, timeout, 5xx, broken stream) marks the endpoint and
tries the next pick; after the first byte the caller turns a failure into an explicit error event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from supernode.router.config import CapacityConfig, HealthConfig, TimeoutsConfig
from supernode.router.errors import NoCapacity, UpstreamError, UpstreamTimeout
from supernode.router.metrics import RouterMetrics
from supernode.router.routing.capacity import reweigh
from supernode.router.routing.dp_ranks import with_rank
from supernode.router.routing.profile import Decision, Profile
from supernode.router.routing.state import Backoff, EndpointState, EndpointTable, RoutingRequest

JSON_HEADERS = {"content-type": "application/json"}
RETRYABLE = (aiohttp.ClientError, OSError, TimeoutError)


def backoff_of(health: HealthConfig) -> Backoff:
    return Backoff(health.ejection_backoff_s, health.max_ejection_backoff_s)


class _Retry(Exception):
    """Try another endpoint. ``alive``: the endpoint answered (e.g. a 5xx), so its health is not marked."""

    def __init__(self, message: str, *, alive: bool):
        super().__init__(message)
        self.alive = alive


@dataclass
class Opened:
    """An upstream response; for streams, the first chunk has already arrived."""

    state: EndpointState
    response: aiohttp.ClientResponse
    between_chunks_s: float
    first_chunk: bytes = b""
    content: bytes = b""
    attempts: int = 1
    started: float = 0.0  # monotonic time the request was sent to this endpoint (measured capacity)
    iterator: AsyncIterator[bytes] | None = None
    dp_rank: int | None = None  # the data-parallel rank it was sent to by name
    _closed: bool = field(default=False, repr=False)

    @property
    def status(self) -> int:
        return self.response.status

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.first_chunk:
            yield self.first_chunk
        it = self.iterator or self.response.content.iter_any().__aiter__()
        while True:
            try:
                async with asyncio.timeout(self.between_chunks_s):
                    chunk = await it.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise UpstreamTimeout(f"no data from {self.state.key} for {self.between_chunks_s:g}s") from None
            except (aiohttp.ClientError, OSError) as e:
                raise UpstreamError(f"stream from {self.state.key} broke: {type(e).__name__}") from None
            yield chunk

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        release(self.state, self.dp_rank)
        self.response.close()  # a fully read response already went back to the pool; else drop the socket

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UpstreamError(f"{self.state.key} answered invalid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"{self.state.key} answered a non-object")
        return data


def hold(state: EndpointState, rank: int | None) -> None:
    state.inflight += 1
    if rank is not None:
        state.rank_inflight[rank] = state.rank_inflight.get(rank, 0) + 1


def release(state: EndpointState, rank: int | None) -> None:
    state.inflight -= 1
    if rank is not None:
        left = state.rank_inflight.get(rank, 0) - 1
        if left > 0:
            state.rank_inflight[rank] = left
        else:
            state.rank_inflight.pop(rank, None)


class Upstream:
    def __init__(self, client: aiohttp.ClientSession | None, table: EndpointTable, profile: Profile,
                 metrics: RouterMetrics, timeouts: TimeoutsConfig, health: HealthConfig, max_attempts: int,
                 capacity: CapacityConfig | None = None):
        self.capacity = capacity or CapacityConfig()
        self.client = client
        self.table = table
        self.profile = profile
        self.metrics = metrics
        self.timeouts = timeouts
        self.health = health
        self.max_attempts = max_attempts

    def _pick(self, req: RoutingRequest, exclude: frozenset[str]) -> Decision | None:
        t0 = time.perf_counter()
        decision = self.profile.pick(req, self.table, exclude)
        self.metrics.routing_latency.observe(time.perf_counter() - t0)
        if decision is None:
            return None
        self.metrics.record_prefix(decision.prefix_blocks, decision.total_blocks)
        return decision

    async def _attempt(self, state: EndpointState, path: str, payload: bytes, stream: bool,
                       rank: int | None = None) -> Opened:
        t = self.timeouts
        read = max(t.first_byte_s, t.between_chunks_s) if stream else t.total_s
        assert self.client is not None, "the app lifespan opens the HTTP client"
        payload, extra = with_rank(state.endpoint.engine_type, payload, rank)
        response = await self.client.post(
            state.endpoint.url.rstrip("/") + path, data=payload, headers={**JSON_HEADERS, **extra},
            allow_redirects=False, timeout=aiohttp.ClientTimeout(total=None, connect=t.connect_s, sock_read=read))
        opened = Opened(state, response, t.between_chunks_s, dp_rank=rank)
        try:
            if response.status >= 500:
                raise _Retry(f"{state.key} answered {response.status}", alive=True)
            if not stream or response.status != 200:
                async with asyncio.timeout(t.total_s):
                    opened.content = await response.read()
                return opened
            opened.iterator = response.content.iter_any().__aiter__()
            async with asyncio.timeout(t.first_byte_s):
                async for chunk in opened.iterator:
                    if chunk:
                        opened.first_chunk = chunk
                        break
            if not opened.first_chunk:
                raise _Retry(f"{state.key} closed the stream before the first byte", alive=False)
            return opened
        except BaseException:
            response.close()
            raise

    def measure(self, state: EndpointState, tokens: float, seconds: float, now: float) -> None:
        """A request finished on `state`: its tokens and open seconds update the endpoint's throughput, and
        the weights of every endpoint of its model are recomputed from the measurements."""
        cfg = self.capacity
        if not cfg.measure:
            return
        state.throughput.add(tokens, seconds, now, cfg.half_life_s)
        model = state.endpoint.model
        reweigh([s for s in self.table if s.endpoint.model == model], cfg.min_samples)

    async def open(self, req: RoutingRequest, path: str, body: dict[str, Any], *, stream: bool) -> Opened:
        """Send to the best endpoint, retrying others on failures before the first byte."""
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()  # once for all attempts
        exclude: set[str] = set()
        last_error = ""
        for attempt in range(1, self.max_attempts + 1):
            decision = self._pick(req, frozenset(exclude))
            if decision is None:
                break
            state, rank = decision.endpoint, decision.dp_rank
            hold(state, rank)
            started = time.monotonic()
            try:
                opened = await self._attempt(state, path, payload, stream, rank)
                opened.attempts, opened.started = attempt, started
                if opened.status < 400:  # the engine took the prompt: it holds its blocks now
                    self.profile.observe(req, state)
                return opened
            except (*RETRYABLE, _Retry) as e:
                release(state, rank)
                last_error = f"{state.key}: {type(e).__name__}: {e}".rstrip(": ")
                if not (isinstance(e, _Retry) and e.alive) and state.record_failure(
                        self.health.unhealthy_after, time.monotonic(), backoff_of(self.health)):
                    self.metrics.ejections.labels("errors").inc()
                exclude.add(state.key)
                self.metrics.retries.labels(type(e).__name__).inc()
            except BaseException:
                release(state, rank)
                raise
        if not exclude:
            raise NoCapacity(f"no ready endpoint serves model {req.model!r} in mode {req.mode.value}",
                             retry_after=1.0)
        raise UpstreamError(f"all {len(exclude)} endpoint(s) tried failed before responding; last: {last_error}")
