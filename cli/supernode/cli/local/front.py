"""A round-robin HTTP front for several local router replicas (what a Kubernetes Service does in a
cluster): each request goes to the next replica; a replica that refuses the connection is skipped.
Bodies are streamed both ways (SSE passes through as it comes)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence

import aiohttp
from aiohttp import web

log = logging.getLogger("supernode.front")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "host",
               "content-length"}
MAX_BODY = 64 * 1024 * 1024


def make_front(replicas: Callable[[], Sequence[str]]) -> web.Application:
    """``replicas()``: the replicas' base URLs now (the fleet may restart one on another port)."""
    counter = itertools.count()
    app = web.Application(client_max_size=MAX_BODY)

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=2))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        urls = list(replicas())
        if not urls:
            return web.json_response({"error": {"message": "no router replica is running", "type": "unavailable"}},
                                     status=503, headers={"retry-after": "1"})
        start = next(counter)
        for i in range(len(urls)):
            base = urls[(start + i) % len(urls)]
            try:
                upstream = await request.app["session"].request(
                    request.method, base + request.rel_url.raw_path_qs, data=body, headers=headers)
            except (aiohttp.ClientConnectionError, OSError):
                continue  # down or restarting: the next replica
            try:
                out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for k, v in upstream.headers.items():
                    if k.lower() not in HOP_HEADERS:
                        out.headers.add(k, v)
                await out.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                # the replica died mid-response: the client sees the connection end (as behind a Service)
                if request.transport is not None:
                    request.transport.close()
                return out
            finally:
                upstream.release()
        return web.json_response({"error": {"message": "no router replica answered", "type": "unavailable"}},
                                 status=503, headers={"retry-after": "1"})

    app.router.add_route("*", "/{tail:.*}", proxy)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
