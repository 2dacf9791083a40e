"""The request path, end to end: admit → route + proxy → translate → meter → release."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from supernode.api import constants as C
from supernode.router.apis.responses import AnthropicStream, to_anthropic_message, usage_from_openai
from supernode.router.config import RouterConfig
from supernode.router.contracts import (
    AdmissionRejected,
    Gatekeeper,
    Meter,
    RequestContext,
    RouterError,
    Tenant,
    Ticket,
    Usage,
    UsageRecord,
)
from supernode.router.errors import Shape, UpstreamError, render, sse_error
from supernode.router.metrics import RouterMetrics
from supernode.router.pipeline import Prepared, engine_body
from supernode.router.proxy import Opened, Upstream
from supernode.router.routing.state import RoutingRequest

log = logging.getLogger("supernode.router.requests")


def error_response(shape: Shape, err: RouterError) -> JSONResponse:
    status, body, headers = render(shape, err)
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class Call:
    """One request's bookkeeping, shared by the streaming and non-streaming paths."""

    request_id: str
    shape: Shape
    tenant: Tenant
    prep: Prepared
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    ticket: Ticket | None = None
    opened: Opened | None = None
    usage: Usage = field(default_factory=Usage)
    status: str = "ok"
    error: str = ""
    code: int = 200
    first_token_at: float | None = None
    metered: bool = False
    finished: bool = False

    @property
    def labels(self) -> dict[str, str]:
        return {"model": self.prep.resolved.model, "mode": self.prep.resolved.mode.value, "tenant": self.tenant.id}


class Service:
    def __init__(self, config: RouterConfig, gatekeeper: Gatekeeper, meter: Meter, upstream: Upstream,
                 metrics: RouterMetrics, *, keepalive_s: float):
        self.keepalive_s = keepalive_s
        self.config = config
        self.gatekeeper = gatekeeper
        self.meter = meter
        self.upstream = upstream
        self.metrics = metrics

    # --- admission ------------------------------------------------------------------------------
    def context(self, call: Call) -> RequestContext:
        p = call.prep
        return RequestContext(
            request_id=call.request_id, api=p.parsed.api, tenant=call.tenant, model=p.resolved.model,
            mode=p.resolved.mode, stream=p.parsed.stream, prompt_tokens_estimate=p.prompt_tokens_estimate,
            max_tokens=p.parsed.max_tokens or self.config.models.default_max_tokens, user=p.parsed.user)

    def _admitted(self, call: Call, ticket: Ticket) -> None:
        call.ticket = ticket
        self.metrics.queue_wait.labels(**call.labels).observe(ticket.queued_seconds)

    # --- entry ----------------------------------------------------------------------------------
    async def handle(self, request: Request, call: Call) -> Response:
        admit = asyncio.ensure_future(self.gatekeeper.admit(self.context(call), call.prep.pools))
        try:
            if call.prep.parsed.stream:
                done, _ = await asyncio.wait({admit}, timeout=self.keepalive_s)
                if not done:  # queued: commit a 200 stream now and keep the client alive while waiting
                    return self._stream_response(call, self._queued_stream(call, admit))
            self._admitted(call, await admit)
            return await (self._start_stream(call) if call.prep.parsed.stream else self._unary(request, call))
        except BaseException as e:
            admit.cancel()
            await self._finish(call, e)
            if isinstance(e, RouterError):
                return error_response(call.shape, e)
            raise

    # --- non-streaming --------------------------------------------------------------------------
    async def _unary(self, request: Request, call: Call) -> Response:
        call.opened = await self._open_watching_disconnect(request, call)
        opened = call.opened
        if opened.status != 200:
            return await self._upstream_error(call)
        data = opened.json()
        call.usage = usage_from_openai(data.get("usage"))
        call.first_token_at = time.perf_counter()
        body: dict[str, Any] = data
        if call.shape == "anthropic":
            body = to_anthropic_message(data, model=str(call.prep.parsed.mode_fields.get("model")))
        else:
            body["model"] = call.prep.parsed.mode_fields.get("model", data.get("model"))
        await self._finish(call, None)  # metered before the body is sent
        return JSONResponse(body, headers=self._headers(call))

    async def _open_watching_disconnect(self, request: Request, call: Call) -> Opened:
        task = asyncio.ensure_future(self._open(call))
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise asyncio.CancelledError("client disconnected")
        return task.result()

    async def _open(self, call: Call) -> Opened:
        assert call.ticket is not None
        pool = call.ticket.pool
        rreq = RoutingRequest(call.request_id, pool.model, pool.mode, call.prep.block_hashes, call.prep.session)
        return await self.upstream.open(rreq, call.prep.parsed.upstream_path, engine_body(call.prep.parsed, pool),
                                        stream=call.prep.parsed.stream)

    async def _upstream_error(self, call: Call) -> Response:
        """An engine 4xx: passed on in the client's API shape."""
        assert call.opened is not None
        status = call.opened.status
        try:
            message = str(call.opened.json().get("error", {}).get("message") or call.opened.content[:500])
        except RouterError:
            message = call.opened.content[:500].decode(errors="replace")
        err = RouterError(f"engine: {message}")
        err.status, err.code = status, "upstream_rejected"
        await self._finish(call, err)
        return error_response(call.shape, err)

    # --- streaming ------------------------------------------------------------------------------
    def _stream_response(self, call: Call, body: AsyncIterator[bytes]) -> StreamingResponse:
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **self._headers(call)}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    async def _start_stream(self, call: Call) -> Response:
        call.opened = await self._open(call)
        if call.opened.status != 200:
            return await self._upstream_error(call)
        return self._stream_response(call, self._guarded(call, self._relay(call)))

    async def _queued_stream(self, call: Call, admit: asyncio.Future[Ticket]) -> AsyncIterator[bytes]:
        async def body() -> AsyncIterator[bytes]:
            while True:
                done, _ = await asyncio.wait({admit}, timeout=self.keepalive_s)
                if done:
                    break
                yield b": keep-alive\n\n"
            self._admitted(call, admit.result())
            call.opened = await self._open(call)
            if call.opened.status != 200:
                raise UpstreamError(f"engine answered {call.opened.status}: {call.opened.content[:300]!r}")
            async for chunk in self._relay(call):
                yield chunk

        try:
            async for chunk in self._guarded(call, body()):
                yield chunk
        finally:
            admit.cancel()

    async def _guarded(self, call: Call, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Errors after the response started become an error event; every path is finished once."""
        try:
            async for chunk in body:
                yield chunk
        except RouterError as e:
            await self._finish(call, e)
            yield sse_error(call.shape, e)
        except BaseException as e:  # client went away (cancelled) or a bug: finish, then re-raise
            await self._finish(call, e)
            raise
        else:
            await self._finish(call, None)

    async def _relay(self, call: Call) -> AsyncIterator[bytes]:
        """Forward SSE events as they complete; hold the final bytes until usage is metered."""
        assert call.opened is not None
        anthropic = AnthropicStream(str(call.prep.parsed.mode_fields.get("model"))) if call.shape == "anthropic" \
            else None
        if anthropic:
            yield anthropic.start()
        buffer = b""
        last = None
        finished = False
        async for chunk in call.opened.chunks():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                payload = _data(event)
                if payload is None:
                    continue
                if payload == "[DONE]":
                    finished = True
                    continue
                try:
                    obj = json.loads(payload)
                except json.JSONDecodeError:
                    continue
                if "error" in obj and "choices" not in obj:
                    raise UpstreamError(f"engine error mid-stream: {obj['error']}")
                if obj.get("usage"):
                    call.usage = usage_from_openai(obj["usage"])
                if any((c.get("delta") or {}).get("content") or (c.get("delta") or {}).get("reasoning_content")
                       for c in obj.get("choices") or []):
                    now = time.perf_counter()
                    if call.first_token_at is None:
                        call.first_token_at = now
                    elif last is not None:
                        self.metrics.itl.labels(**call.labels).observe(now - last)
                    last = now
                if anthropic:
                    out = anthropic.feed(obj)
                    if out:
                        yield out
                elif obj.get("choices") or call.prep.parsed.include_usage:
                    yield event + b"\n\n"
        if not finished and anthropic is None:
            raise UpstreamError("the engine's stream ended without [DONE]")
        await self._meter(call, None)
        yield (anthropic.finish(call.usage) + anthropic.stop()) if anthropic else b"data: [DONE]\n\n"

    # --- completion ---------------------------------------------------------------------------
    def _headers(self, call: Call) -> dict[str, str]:
        headers = {C.HEADER_REQUEST_ID: call.request_id}
        if call.ticket is not None:
            headers[C.HEADER_SERVED_MODEL] = call.ticket.pool.model
            headers[C.HEADER_SERVED_MODE] = call.ticket.pool.mode.value
        if call.opened is not None:
            headers[C.HEADER_ENDPOINT] = call.opened.state.key
        return headers

    def _record(self, call: Call) -> UsageRecord:
        pool = call.ticket.pool if call.ticket else call.prep.pools[0]
        return UsageRecord(
            request_id=call.request_id, tenant=call.tenant.id, api=call.prep.parsed.api,
            model=call.prep.resolved.model, mode=call.prep.resolved.mode, served_model=pool.model,
            served_mode=pool.mode, endpoint=call.opened.state.key if call.opened else "", usage=call.usage,
            status=call.status, started_at=call.started, finished_at=time.time(),  # type: ignore[arg-type]
            error=call.error, queued_seconds=call.ticket.queued_seconds if call.ticket else 0.0)

    async def _meter(self, call: Call, error: BaseException | None) -> None:
        """Durably record usage (before the final bytes). Only admitted requests are metered."""
        if call.ticket is None or call.metered:
            return
        call.metered = True
        if isinstance(error, asyncio.CancelledError):
            call.status, call.error = "cancelled", "client disconnected"
        elif error is not None:
            call.status, call.error = "error", str(error)[:500]
        record = self._record(call)
        if isinstance(error, asyncio.CancelledError):
            self.meter.record(record)  # no awaiting inside a cancelled task
        else:
            await asyncio.to_thread(self.meter.record, record)

    async def _finish(self, call: Call, error: BaseException | None) -> None:
        if call.finished:
            return
        call.finished = True
        if isinstance(error, RouterError):
            call.code = error.status
            if isinstance(error, AdmissionRejected):
                self.metrics.rejections.labels(error.limit).inc()
            elif error.status in (401, 403, 413, 429, 503):
                self.metrics.rejections.labels(error.code).inc()
        elif isinstance(error, asyncio.CancelledError):
            call.code = 499
        elif error is not None:
            call.code = 500
        try:
            await self._meter(call, error)
        finally:
            if call.opened is not None:
                await _quiet_close(call.opened)
            if call.ticket is not None:
                call.ticket.release(call.usage)
            self._observe(call)

    def _observe(self, call: Call) -> None:
        lb = call.labels
        m = self.metrics
        m.requests.labels(**lb, code=str(call.code)).inc()
        elapsed = time.perf_counter() - call.t0
        m.e2e.labels(**lb).observe(elapsed)
        if call.first_token_at is not None:
            m.ttft.labels(**lb).observe(call.first_token_at - call.t0)
        u = call.usage
        for kind, n in (("prompt", u.prompt_tokens), ("cached", u.cached_tokens),
                        ("completion", u.completion_tokens), ("reasoning", u.reasoning_tokens)):
            if n:
                m.tokens.labels(**lb, kind=kind).inc(n)
        if self.config.server.log_requests:
            log.info(json.dumps({
                "event": "request", "request_id": call.request_id, "api": call.prep.parsed.api,
                "tenant": call.tenant.id, "model": lb["model"], "mode": lb["mode"], "code": call.code,
                "served": call.ticket.pool.model if call.ticket else None,
                "endpoint": call.opened.state.key if call.opened else None,
                "attempts": call.opened.attempts if call.opened else 0, "stream": call.prep.parsed.stream,
                "duration_s": round(elapsed, 6), "prompt_tokens": u.prompt_tokens, "cached_tokens": u.cached_tokens,
                "completion_tokens": u.completion_tokens, "error": call.error or None}))


def _data(event: bytes) -> str | None:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip().decode(errors="replace")
    return None


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _quiet_close(opened: Opened) -> None:
    with contextlib.suppress(BaseException):
        await asyncio.shield(opened.close())


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:20]}"
