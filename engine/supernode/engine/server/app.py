"""FastAPI app: OpenAI chat/completions, models, health, metrics, KV events."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from supernode.api.constants import HEADER_REQUEST_ID, HEADER_SERVED_MODE
from supernode.api.models import Mode
from supernode.api.strictjson import StrictJSONError, loads_strict
from supernode.engine.chat import ChatError, ReasoningBudgets, render_chat_pieces, resolve_mode
from supernode.engine.llm_engine import EngineDead, EngineOverloaded, LLMEngine, Output, RequestHandle
from supernode.engine.metrics import EngineMetrics
from supernode.engine.server.guard import GuardMiddleware, Guards
from supernode.engine.server.prompting import PromptEncoder
from supernode.engine.server.protocol import APIError, ChatRequest, CompletionRequest, parse
from supernode.engine.server.responses import Envelope, sse

log = logging.getLogger("supernode.engine.server")


@dataclass(slots=True)
class ServerState:
    """What the routes need. ``engine`` is None until weights are loaded and every rank is up."""

    model_name: str
    metrics: EngineMetrics
    aliases: tuple[str, ...] = ()
    default_mode: Mode = Mode.THINK_HIGH
    budgets: ReasoningBudgets = field(default_factory=ReasoningBudgets)
    kv_keepalive_s: float = 15.0
    engine: LLMEngine | None = None
    guards: Guards = field(default_factory=Guards)  # router token + body limit (server/guard.py)
    encoder: PromptEncoder = field(default_factory=PromptEncoder)  # off-loop tokenization (server/prompting.py)


def build_app(
    state: ServerState, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
) -> FastAPI:
    app = FastAPI(title="supernode engine", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.server = state
    app.add_middleware(GuardMiddleware, guards=state.guards)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> Response:
        return exc.response()

    def engine() -> LLMEngine:
        if state.engine is None:
            raise APIError(503, "the engine is still loading", code="not_ready", retry_after=5)
        if not state.engine.alive:
            raise APIError(503, "the engine has failed", code="engine_dead")
        return state.engine

    async def body_of(request: Request) -> Any:
        try:  # strict: no NaN/Infinity, lone surrogates, deep nesting or huge integers (shared rules)
            return loads_strict(await request.body())
        except StrictJSONError as exc:
            raise APIError(400, f"invalid JSON body: {exc}", code="invalid_json") from exc

    def check_model(name: str) -> None:
        if name not in (state.model_name, *state.aliases):
            raise APIError(404, f"model {name!r} is not served here (serving {state.model_name!r})", param="model")

    def submit(
        eng: LLMEngine, ids: list[int], req: ChatRequest | CompletionRequest, budget: int | None
    ) -> RequestHandle:
        limit, is_chat = eng.options.max_model_len, isinstance(req, ChatRequest)
        if len(ids) + 1 > limit:
            param = "messages" if is_chat else "prompt"
            msg = f"prompt has {len(ids)} tokens; this model's context is {limit}"
            raise APIError(400, msg, param=param, code="context_length_exceeded")
        default = limit - len(ids) if is_chat else 16
        if isinstance(req, ChatRequest) and req.max_tokens is None and req.max_completion_tokens is not None:
            req.max_tokens = req.max_completion_tokens
        params = req.sampling(default)
        try:
            rid = f"{'chatcmpl' if is_chat else 'cmpl'}-{uuid.uuid4().hex}"
            return eng.submit(ids, params, budget, request_id=rid, streaming=req.stream)
        except EngineOverloaded as exc:
            raise APIError(429, str(exc), retry_after=exc.retry_after) from exc
        except EngineDead as exc:
            raise APIError(503, str(exc), code="engine_dead") from exc
        except ValueError as exc:
            raise APIError(400, str(exc), param="prompt") from exc

    async def collect(request: Request, handle: RequestHandle, eng: LLMEngine) -> tuple[str, str, list[int], Output]:
        """Wait for the whole result; a client that disconnects cancels the request (freeing its blocks)."""
        reasoning, content, ids = [], [], []

        async def consume() -> Output:
            async for out in handle:
                if out.error:
                    raise APIError(500, out.error, code="engine_error")
                reasoning.append(out.delta.reasoning)
                content.append(out.delta.content)
                ids.extend(out.token_ids)
                if out.finish_reason is not None:
                    return out
            raise APIError(500, "stream ended early", code="engine_error")

        async def disconnected() -> None:
            # The body is read, so the next ASGI message is the disconnect: wait for it, no polling.
            while (await request.receive())["type"] != "http.disconnect":
                pass

        work, watch = asyncio.ensure_future(consume()), asyncio.ensure_future(disconnected())
        try:
            done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                eng.abort(handle.request_id)
                raise APIError(499, "client disconnected", code="cancelled")
            return "".join(reasoning), "".join(content), ids, work.result()
        finally:
            watch.cancel()
            if not work.done():
                work.cancel()
                eng.abort(handle.request_id)

    def stream(events: AsyncIterator[str], handle: RequestHandle, eng: LLMEngine) -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            try:
                async for chunk in events:
                    yield chunk
            finally:  # client gone or stream done: cancelling a finished request is a no-op
                eng.abort(handle.request_id)

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        eng = engine()
        req: ChatRequest = parse(ChatRequest, await body_of(request))
        check_model(req.model)
        try:
            mode = resolve_mode(req.model_dump(), state.default_mode)
            pieces = render_chat_pieces(req.messages, mode)
        except ChatError as exc:
            raise APIError(400, str(exc), param=exc.param) from exc
        thinking = mode is not Mode.NON_THINK
        ids = await state.encoder.encode_pieces(eng.tokenizer, pieces, eng.options.max_model_len, "messages")
        handle = submit(eng, ids, req, state.budgets.for_mode(mode))
        env = Envelope(handle.request_id, req.model, chat=True)
        headers = {
            HEADER_SERVED_MODE: mode.value,
            HEADER_REQUEST_ID: request.headers.get(HEADER_REQUEST_ID, handle.request_id),
        }
        if not req.stream:
            reasoning, content, _, final = await collect(request, handle, eng)
            return JSONResponse(env.chat_message(reasoning, content, final, thinking), headers=headers)

        async def events() -> AsyncIterator[str]:
            yield sse(env.chat_chunk({"role": "assistant", "content": ""}))
            async for out in handle:
                if out.error:
                    yield sse(APIError(500, out.error, code="engine_error").body())
                    break
                delta: dict[str, Any] = {}
                if out.delta.reasoning:
                    delta["reasoning_content"] = out.delta.reasoning
                if out.delta.content:
                    delta["content"] = out.delta.content
                if delta:
                    yield sse(env.chat_chunk(delta))
                if out.finish_reason is not None:
                    yield sse(env.chat_chunk({}, out.finish_reason))
                    if req.include_usage:
                        yield sse(env.usage_chunk(out))
            yield sse("[DONE]")

        resp = stream(events(), handle, eng)
        resp.headers.update(headers)
        return resp

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        eng = engine()
        req: CompletionRequest = parse(CompletionRequest, await body_of(request))
        check_model(req.model)
        prompt = req.single_prompt()
        if isinstance(prompt, str):
            ids = await state.encoder.encode_text(eng.tokenizer, prompt, eng.options.max_model_len, "prompt")
        else:
            ids = list(prompt)  # token ids are taken as given (see docs/security.md on token-id prompts)
        handle = submit(eng, ids, req, None)
        env = Envelope(handle.request_id, req.model, chat=False)
        ids_header = {HEADER_REQUEST_ID: request.headers.get(HEADER_REQUEST_ID, handle.request_id)}
        want_ids = req.return_token_ids
        echo = (prompt if isinstance(prompt, str) else eng.tokenizer.decode(ids)) if req.echo else ""
        if not req.stream:
            _, content, out_ids, final = await collect(request, handle, eng)
            body = env.completion(echo + content, final, out_ids if want_ids else None)
            if want_ids:
                body["choices"][0]["prompt_token_ids"] = ids
            return JSONResponse(body, headers=ids_header)

        async def events() -> AsyncIterator[str]:
            if echo:
                yield sse(env.completion_chunk(echo, None, None))
            async for out in handle:
                if out.error:
                    yield sse(APIError(500, out.error, code="engine_error").body())
                    break
                text = out.delta.reasoning + out.delta.content
                if text or (want_ids and out.token_ids) or out.finish_reason:
                    yield sse(env.completion_chunk(text, out.token_ids if want_ids else None, out.finish_reason))
                if out.finish_reason is not None and req.include_usage:
                    yield sse(env.usage_chunk(out))
            yield sse("[DONE]")

        resp = stream(events(), handle, eng)
        resp.headers.update(ids_header)
        return resp

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        max_len = state.engine.options.max_model_len if state.engine else None
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "supernode", "max_model_len": max_len}
            for name in (state.model_name, *state.aliases)
        ]
        return {"object": "list", "data": data}

    @app.get("/health")
    async def health() -> Response:
        if state.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        if not state.engine.alive:
            return JSONResponse({"status": "failed", "error": repr(state.engine.error)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/kv_events")
    async def kv_events(request: Request) -> Response:
        eng = engine()
        ndjson = "ndjson" in request.headers.get("accept", "") or request.query_params.get("format") == "ndjson"
        queue = eng.subscribe_kv_events()

        async def body() -> AsyncIterator[str]:
            try:
                while True:
                    try:
                        ev = await asyncio.wait_for(queue.get(), state.kv_keepalive_s)
                    except TimeoutError:
                        yield "\n" if ndjson else ": keep-alive\n\n"
                        continue
                    if ev is None:
                        return  # fell behind: the client reconnects and gets a fresh snapshot
                    data = {"type": ev.type, "block_hashes": list(ev.block_hashes), "block_size": eng.blocks.block_size}
                    yield json.dumps(data) + "\n" if ndjson else sse(data)
            finally:
                eng.unsubscribe_kv_events(queue)

        media = "application/x-ndjson" if ndjson else "text/event-stream"
        return StreamingResponse(body(), media_type=media, headers={"Cache-Control": "no-cache"})

    return app
