"""The built-in engine's KV events over HTTP (`GET /v1/kv_events`, newline-delimited JSON).

The feed asks for load records too (``load=1``, supernode.api.kv_load): the engine's running and waiting
requests, handed to ``on_load`` as they change (None when the feed stops) so every router replica sees
every other replica's requests on the engine without waiting for its metrics scrape.

The stream starts with a snapshot (or, when resuming with ``after``/``instance``, with the events
missed), then numbered changes. A gap, a new engine instance or a malformed event ends the stream:
the feed reconnects for a fresh snapshot, which replaces everything the index held for the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp

from supernode.api.kv_load import parse_load
from supernode.router.kv_events.apply import BadEvents, FeedHooks, StreamPosition, apply_stream_record
from supernode.router.routing.precise_index import PreciseIndex

log = logging.getLogger("supernode.router.kv_events")

MAX_LINE_BYTES = 256 * 1024 * 1024  # a snapshot of millions of blocks still fits; beyond is bad input


class HttpFeed:
    def __init__(self, url: str, index: PreciseIndex, session: aiohttp.ClientSession, *,
                 hooks: FeedHooks, retry_s: float, bad_input_retry_s: float,
                 read_timeout_s: float = 60.0, on_load: Callable[[int | None], None] = lambda _: None):
        self.url = url
        self.index = index
        self.session = session
        self.hooks = hooks
        self.retry_s = retry_s
        self.bad_input_retry_s = bad_input_retry_s
        self.read_timeout_s = read_timeout_s
        self.pos = StreamPosition()
        self.on_load = on_load

    def _precise(self, value: bool) -> None:
        self.index.set_precise(self.url, value)
        self.hooks.set_prefix_mode(self.url, value)

    async def run(self) -> None:
        while True:
            delay = self.retry_s
            try:
                if await self._follow() == "gap":
                    log.info("KV events from %s: gap after seq %s; resyncing from a snapshot", self.url, self.pos.seq)
                    self.pos = StreamPosition()
                    delay = 0.0
            except BadEvents as e:
                log.warning("KV events from %s are malformed (%s); approximate routing for %gs",
                            self.url, e, self.bad_input_retry_s)
                self.hooks.kv_events_malformed(self.url)
                self.index.clear(self.url)
                self.pos = StreamPosition()
                delay = self.bad_input_retry_s
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                log.debug("KV events from %s unavailable: %s", self.url, e)
            self._precise(False)
            self.on_load(None)  # the scrape counts others' requests again
            await asyncio.sleep(delay)

    async def _follow(self) -> str:
        params = {"format": "ndjson", "load": "1"}
        if self.pos.seq is not None and self.pos.instance:
            params |= {"after": str(self.pos.seq), "instance": self.pos.instance}
        timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=self.read_timeout_s)
        async with self.session.get(self.url.rstrip("/") + "/v1/kv_events", params=params, timeout=timeout) as r:
            if r.status != 200:
                raise aiohttp.ClientResponseError(r.request_info, r.history, status=r.status)
            if self.pos.seq is not None:
                self._precise(True)  # resumed: the engine replays what we missed or sends a snapshot
            async for line in _lines(r.content):
                try:
                    record = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise BadEvents(f"not JSON: {e}") from None
                if isinstance(record, dict) and record.get("type") == "load":
                    try:
                        self.on_load(parse_load(record))
                    except ValueError as e:
                        raise BadEvents(f"load record: {e}") from None
                    continue
                if apply_stream_record(self.index, self.url, self.pos, record) == "gap":
                    return "gap"
                self._precise(True)
        return "ended"


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Non-blank lines of a stream, of any length up to MAX_LINE_BYTES."""
    buf = bytearray()
    async for chunk in content.iter_any():
        buf += chunk
        while (nl := buf.find(b"\n")) >= 0:
            line = bytes(buf[:nl]).strip()
            del buf[: nl + 1]
            if line:
                yield line
        if len(buf) > MAX_LINE_BYTES:
            raise BadEvents(f"an event longer than {MAX_LINE_BYTES} bytes")
