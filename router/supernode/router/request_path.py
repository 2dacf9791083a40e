"""The request path, end to end: admit → route + proxy → translate → meter → release."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from supernode.router.apis.responses import AnthropicStream, to_anthropic_message, usage_from_openai
from supernode.router.call import Call, call_headers, observe, usage_record
from supernode.router.config import RouterConfig
from supernode.router.contracts import Gatekeeper, Meter, RequestContext, Ticket
from supernode.router.errors import (
    AdmissionRejected,
    RouterError,
    Shape,
    UpstreamError,
    UpstreamRejected,
    render,
    sse_error,
)
from supernode.router.metrics import RouterMetrics
from supernode.router.pipeline import engine_body, per_choice
from supernode.router.proxy import Opened, Upstream
from supernode.router.routing.capacity import work_tokens
from supernode.router.routing.state import RoutingRequest
from supernode.router.sse import SseSplitter, data_of, reply_text, tokens_in
from supernode.router.tokens.service import PromptTokens

log = logging.getLogger("supernode.router.requests")


def error_response(shape: Shape, err: RouterError) -> JSONResponse:
    status, body, headers = render(shape, err)
    return JSONResponse(body, status_code=status, headers=headers)


class Service:
    def __init__(self, config: RouterConfig, gatekeeper: Gatekeeper, meter: Meter, upstream: Upstream,
                 metrics: RouterMetrics, *, keepalive_s: float, tokens: PromptTokens | None = None):
        self.keepalive_s = keepalive_s
        self.tokens = tokens
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
            max_tokens=p.max_tokens * p.parsed.n, user=p.parsed.user,
            token_id_prompt=bool(p.parsed.extra.get("token_id_prompt")))

    async def _admitted(self, call: Call, ticket: Ticket) -> None:
        """Admitted: the ledger gets an open row now (durably), finalised when the request ends."""
        call.ticket = ticket
        record = usage_record(call, "open")
        if getattr(self.meter, "blocking", True):
            await asyncio.to_thread(self.meter.open, record)
        else:
            self.meter.open(record)

    # --- entry ----------------------------------------------------------------------------------
    async def handle(self, request: Request, call: Call) -> Response:
        admit: asyncio.Future[Ticket] | None = None
        try:
            if call.prep.parsed.stream:
                admit = asyncio.ensure_future(self.gatekeeper.admit(self.context(call), call.prep.pools))
                done, _ = await asyncio.wait({admit}, timeout=self.keepalive_s)
                if not done:  # queued: commit a 200 stream now and keep the client alive while waiting
                    return self._stream_response(call, self._queued_stream(call, admit))
                await self._admitted(call, admit.result())
                return await self._start_stream(call)
            await self._admitted(call, await self.gatekeeper.admit(self.context(call), call.prep.pools))
            return await self._unary(request, call)
        except BaseException as e:
            if admit is not None:
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
        call.usage_final = bool(data.get("usage"))
        call.first_token_at = time.perf_counter()
        body: dict[str, Any] = data
        if call.shape == "anthropic":
            body = to_anthropic_message(data, model=str(call.prep.parsed.mode_fields.get("model")))
        else:
            body["model"] = call.prep.parsed.mode_fields.get("model", data.get("model"))
        await self._finish(call, None)  # metered before the body is sent
        self._remember(call, reply_text(data))
        return JSONResponse(body, headers=call_headers(call))

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
        token_hashes = call.prep.token_block_hashes
        if self.tokens is not None:  # spilled over: the serving pool's template mode (or model) hashes differently
            token_hashes = await self.tokens.hashes_for(call.prep, pool)
        rreq = RoutingRequest(call.request_id, pool.model, pool.mode, call.prep.block_hashes, call.prep.session,
                              token_block_hashes=token_hashes, prompt_tokens=call.prep.prompt_tokens_estimate)
        body = engine_body(call.prep.parsed, pool, max_tokens=per_choice(call.ticket.max_tokens, call.prep.parsed.n))
        return await self.upstream.open(rreq, call.prep.parsed.upstream_path, body, stream=call.prep.parsed.stream)

    async def _upstream_error(self, call: Call) -> Response:
        """An engine 4xx: passed on in the client's API shape."""
        assert call.opened is not None
        status = call.opened.status
        try:
            detail = call.opened.json().get("error")
        except RouterError:
            detail = None
        if not isinstance(detail, dict):
            detail = {}
        message = str(detail.get("message") or call.opened.content[:500].decode(errors="replace"))
        err = UpstreamRejected(f"engine: {message}", status=status, code=detail.get("code"),
                               param=detail.get("param"))
        await self._finish(call, err)
        return error_response(call.shape, err)

    # --- streaming ------------------------------------------------------------------------------
    def _stream_response(self, call: Call, body: AsyncIterator[bytes]) -> StreamingResponse:
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **call_headers(call)}
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
            await self._admitted(call, admit.result())
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
        splitter = SseSplitter()
        itl = self.metrics.itl.labels(**call.hist_labels)  # looked up once, observed per token
        last = None
        checkpoint = self.config.metering.checkpoint_seconds if self.config.metering else 0.0
        next_checkpoint = time.monotonic() + checkpoint
        finished, reply = False, []
        async for chunk in call.opened.chunks():
            for event in splitter.feed(chunk):
                payload = data_of(event)
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
                    call.usage_final = True
                reply.append(reply_text(obj))
                tokens = sum(tokens_in(c) for c in obj.get("choices") or [])  # every choice's (n > 1)
                if tokens:
                    call.delivered_tokens += tokens  # billed if the stream stops
                    if checkpoint and time.monotonic() >= next_checkpoint:
                        next_checkpoint = time.monotonic() + checkpoint
                        await self._checkpoint(call)
                    now = time.perf_counter()
                    if call.first_token_at is None:
                        call.first_token_at = now
                    elif last is not None:
                        itl.observe(now - last)
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
        self._remember(call, "".join(reply))
        yield (anthropic.finish(call.usage) + anthropic.stop()) if anthropic else b"data: [DONE]\n\n"

    def _remember(self, call: Call, reply: str) -> None:
        """A chat reply comes back as the next turn's assistant message: its ids are cached meanwhile."""
        if self.tokens is not None and reply and call.prep.parsed.upstream_path == "/v1/chat/completions":
            self.tokens.remember_reply(call.prep.resolved.model, reply)

    async def _checkpoint(self, call: Call) -> None:
        """The open row learns the tokens delivered so far (what a restart bills if we die now)."""
        record = usage_record(call, "open")
        if getattr(self.meter, "blocking", True):
            await asyncio.to_thread(self.meter.progress, record)
        else:
            self.meter.progress(record)

    # --- completion ---------------------------------------------------------------------------
    async def _meter(self, call: Call, error: BaseException | None) -> None:
        """Durably record usage (before the final bytes). Only admitted requests are metered."""
        if call.ticket is None or call.metered:
            return
        call.metered = True
        if isinstance(error, asyncio.CancelledError):
            call.status, call.error = "cancelled", "client disconnected"
        elif error is not None:
            call.status, call.error = "error", str(error)[:500]
        record = usage_record(call)
        if isinstance(error, asyncio.CancelledError) or not getattr(self.meter, "blocking", True):
            self.meter.record(record)  # no awaiting inside a cancelled task; or a meter that never blocks
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
        call.usage = call.delivered_usage()
        if error is None and call.opened is not None and call.opened.status == 200:
            u = call.usage
            self.upstream.measure(call.opened.state, work_tokens(u.completion_tokens, u.prompt_tokens, u.cached_tokens,
                                                                 self.upstream.capacity.prefill_weight),
                                  time.monotonic() - call.opened.started, time.monotonic())
        try:
            await self._meter(call, error)
        finally:
            if call.opened is not None:
                await _quiet_close(call.opened)
            if call.ticket is not None:
                call.ticket.release(call.usage)
            observe(call, self.metrics, log_requests=self.config.server.log_requests)

async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _quiet_close(opened: Opened) -> None:
    with contextlib.suppress(BaseException):
        await asyncio.shield(opened.close())

