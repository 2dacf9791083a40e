"""HTTP server limits shared by the router and the engine (uvicorn, httptools protocol).

uvicorn alone bounds neither how long a client may take to send its request headers nor how large
they may be, and a connection that never sends a byte is kept forever, so a flood of idle or slow
connections pins sockets and memory. ``GuardedProtocol`` adds, per connection:

- a header deadline: the request line and headers must arrive within ``header_timeout_s`` of the
  connection opening or of the previous response (then the connection is closed);
- a header size bound: more than ``max_header_bytes`` before the headers end → 431 and close;
- a hard connection cap: beyond ``max_connections + overflow`` open connections, new ones are closed
  at once (below it, uvicorn's ``limit_concurrency`` answers a clear 503 to each request beyond
  ``max_connections``, except the health paths, which keep answering).

Idle keep-alive connections are closed after ``keepalive_timeout_s`` (uvicorn's own timer).
``uvicorn_options(limits)`` gives the keyword arguments for ``uvicorn.Config``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_connections: int = 1024  # requests beyond this many open connections get 503
    overflow_connections: int = 256  # beyond max + this many, new connections are closed unanswered
    header_timeout_s: float = 10.0  # request line + headers must arrive within this
    max_header_bytes: int = 32 * 1024  # request line + headers
    keepalive_timeout_s: float = 5.0  # idle keep-alive connections are closed after this
    always_served: tuple[bytes, ...] = (b"/health", b"/ready")  # answered even beyond max_connections


_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 32\r\nconnection: close\r\n\r\nrequest headers are too large.\r\n")


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a header size bound and a hard cap."""

    limits = HttpLimits()  # replaced per server by ``protocol_for``

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._in_headers = True
        self._rejected = False
        self._deadline: asyncio.TimerHandle | None = None
        lim = self.limits
        if len(self.connections) > lim.max_connections + lim.overflow_connections:
            transport.close()  # connection_lost removes it from the set
            return
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self._in_headers and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        super().data_received(data)

    def _count(self, n: int) -> None:
        """Request line and header bytes as the parser reports them; too many → 431 and close."""
        self._header_bytes += n
        if self._header_bytes > self.limits.max_header_bytes and not self._rejected:
            self._rejected = True
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(_431)
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._in_headers = True
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        if self._rejected:
            return
        if self.url.split(b"?", 1)[0] in self.limits.always_served:  # probes answer even when saturated
            limit, self.limit_concurrency = self.limit_concurrency, None
            try:
                super().on_headers_complete()
            finally:
                self.limit_concurrency = limit
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._rejected:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_headers = True  # waiting for the next request: uvicorn's keep-alive timer runs now


def limits_of(settings: Any) -> HttpLimits:
    """HttpLimits from a settings object with the same field names (e.g. the router's ``server`` section),
    so configuration stays plain data that does not import this uvicorn-side module."""
    names = ("max_connections", "overflow_connections", "header_timeout_s", "max_header_bytes", "keepalive_timeout_s")
    return HttpLimits(**{n: getattr(settings, n) for n in names if hasattr(settings, n)})


def protocol_for(limits: HttpLimits) -> type[GuardedProtocol]:
    return type("GuardedProtocolWithLimits", (GuardedProtocol,), {"limits": limits})


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` / ``uvicorn.run`` that apply ``limits``."""
    return {
        "http": protocol_for(limits),
        "limit_concurrency": limits.max_connections,
        "timeout_keep_alive": max(1, round(limits.keepalive_timeout_s)),
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "server_header": False,  # no server software/version in responses
    }
