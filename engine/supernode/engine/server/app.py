"""FastAPI app: OpenAI chat/completions, models, tokenizer, health, metrics, KV events."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from supernode.api.chattemplate import TEMPLATE_ID, ChatError, chat_prompt
from supernode.api.constants import HEADER_REQUEST_ID, HEADER_SERVED_MODE
from supernode.api.kv_load import DEFAULT_INTERVAL_S, LOAD_CHANGED, wants_load
from supernode.api.models import Mode
from supernode.api.modes import ModeFieldError, resolve_mode
from supernode.api.prompttokens import tokenizer_digest
from supernode.api.strictjson import StrictJSONError, loads_strict
from supernode.api.tokenizerinfo import TOKENIZER_PATH, TokenizerInfo
from supernode.api.tooltemplate import ToolSpecError
from supernode.engine.chat import ReasoningBudgets
from supernode.engine.core.context import ContextLengthExceeded, room_after
from supernode.engine.llm_engine import EngineDead, EngineOverloaded, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.server.choices import collect, stream
from supernode.engine.server.guard import GuardMiddleware, Guards
from supernode.engine.server.prompting import PromptEncoder
from supernode.engine.server.protocol import APIError, ChatRequest, CompletionRequest, parse
from supernode.engine.server.responses import ChatFormat, Choice, CompletionFormat, Envelope, sse
from supernode.engine.tool_calls import ToolCallParser, ToolTokens

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
    kv_load_interval_s: float = DEFAULT_INTERVAL_S  # at most one load record per /v1/kv_events reader this often
    engine: LLMEngine | None = None
    guards: Guards = field(default_factory=Guards)  # router token + body limit (server/guard.py)
    encoder: PromptEncoder = field(default_factory=PromptEncoder)  # off-loop tokenization (server/prompting.py)
    tokenizer_info: tuple[str, bytes] | None = None  # GET /v1/tokenizer (ETag, body), built on first use


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
        eng: LLMEngine,
        ids: list[int],
        req: ChatRequest | CompletionRequest,
        budget: int | None,
        parser: Callable[[], ToolCallParser | None] = lambda: None,
    ) -> tuple[str, list[Choice]]:
        """Queue the request's ``n`` choices (one sequence each; seeded choices get seed, seed+1, ...)."""
        is_chat = isinstance(req, ChatRequest)
        default = max(1, room_after(len(ids), eng.options.max_model_len)) if is_chat else 16
        if isinstance(req, ChatRequest) and req.max_tokens is None and req.max_completion_tokens is not None:
            req.max_tokens = req.max_completion_tokens
        params = req.sampling(default)
        rid = f"{'chatcmpl' if is_chat else 'cmpl'}-{uuid.uuid4().hex}"
        choices: list[Choice] = []
        try:
            for i in range(req.n):
                p = params if params.seed is None else dataclasses.replace(params, seed=params.seed + i)
                handle = eng.submit(
                    ids, p, budget, request_id=rid if i == 0 else f"{rid}-{i}", streaming=req.stream,
                    tool_parser=parser(),
                )  # fmt: skip
                choices.append(Choice(i, handle))
        except BaseException as exc:
            for c in choices:
                eng.abort(c.handle.request_id)
            if isinstance(exc, ContextLengthExceeded):  # the engine's one rule (core/context.py), in API terms
                param = "messages" if is_chat else "prompt"
                raise APIError(400, str(exc), param=param, code="context_length_exceeded") from exc
            if isinstance(exc, EngineOverloaded):
                raise APIError(429, str(exc), retry_after=exc.retry_after) from exc
            if isinstance(exc, EngineDead):
                raise APIError(503, str(exc), code="engine_dead") from exc
            if isinstance(exc, ValueError):
                raise APIError(400, str(exc), param="prompt") from exc
            raise
        return rid, choices

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        eng = engine()
        req: ChatRequest = parse(ChatRequest, await body_of(request))
        check_model(req.model)
        try:
            mode = resolve_mode(req.model_dump(), default=state.default_mode)
            tool_ids = ToolTokens.resolve(eng.tokenizer.token_id)
            prompt = chat_prompt(req.messages, req.tools, req.tool_choice, mode, tool_tokens=tool_ids is not None)
        except (ChatError, ModeFieldError, ToolSpecError) as exc:
            raise APIError(400, str(exc), param=exc.param) from exc
        thinking = mode is not Mode.NON_THINK
        choice = prompt.choice
        ids = await state.encoder.encode_pieces(eng.tokenizer, prompt.pieces, eng.options.max_model_len, "messages")

        def parser() -> ToolCallParser | None:
            if tool_ids is None or not choice.enabled or not prompt.tools:
                return None
            return ToolCallParser(tool_ids, single=not req.parallel_tool_calls, forced=choice)

        rid, choices = submit(eng, ids, req, state.budgets.for_mode(mode), parser)
        fmt = ChatFormat(Envelope(rid, req.model, chat=True), eng.tokenizer, thinking)
        headers = {
            HEADER_SERVED_MODE: mode.value,
            HEADER_REQUEST_ID: request.headers.get(HEADER_REQUEST_ID, rid),
        }
        if not req.stream:
            return JSONResponse(await collect(request, eng, choices, fmt), headers=headers)
        return stream(eng, choices, fmt, req.include_usage, headers)

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
        rid, choices = submit(eng, ids, req, None)
        echo = (prompt if isinstance(prompt, str) else eng.tokenizer.decode(ids)) if req.echo else ""
        env = Envelope(rid, req.model, chat=False)
        echo_ids = ids if req.echo and req.logprobs is not None else []
        fmt = CompletionFormat(env, eng.tokenizer, echo, ids if req.return_token_ids else None, echo_ids)
        headers = {HEADER_REQUEST_ID: request.headers.get(HEADER_REQUEST_ID, rid)}
        if not req.stream:
            return JSONResponse(await collect(request, eng, choices, fmt), headers=headers)
        return stream(eng, choices, fmt, req.include_usage, headers)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        max_len = state.engine.options.max_model_len if state.engine else None
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "supernode", "max_model_len": max_len}
            for name in (state.model_name, *state.aliases)
        ]
        return {"object": "list", "data": data}

    @app.get(TOKENIZER_PATH)
    async def tokenizer(request: Request) -> Response:
        """The tokenizer, chat template id, block size and hash seed: routers encode and hash as we do."""
        eng = engine()
        if state.tokenizer_info is None:  # megabytes for a real vocabulary: built once, on the first ask
            text = eng.tokenizer.to_json()
            info = TokenizerInfo(
                model=state.model_name, hash_seed=eng.blocks.model_name, block_size=eng.blocks.block_size,
                template=TEMPLATE_ID, digest=tokenizer_digest(text), tokenizer=text,
            )  # fmt: skip
            state.tokenizer_info = (info.etag, info.model_dump_json().encode())
        etag, body = state.tokenizer_info
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag})
        return Response(body, media_type="application/json", headers={"etag": etag})

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
        """Numbered KV events of this engine instance. ``?after=N&instance=I`` resumes after event N when
        I is still this instance and the engine kept every later event; otherwise the stream starts with a
        "snapshot" event (every cached block, numbered with the last seq) that replaces what the reader held.
        ``?load=1`` adds unnumbered "load" records (running and waiting requests; supernode.api.kv_load)."""
        eng = engine()
        params = request.query_params
        ndjson = "ndjson" in request.headers.get("accept", "") or params.get("format") == "ndjson"
        after = _resume_after(params.get("after"), params.get("instance"), eng.kv_instance)
        try:
            with_load = wants_load(params.get("load"))
        except ValueError as e:
            raise APIError(400, str(e), param="load") from None
        queue = eng.subscribe_kv_events(after=after)
        load = eng.kv_events.load.reader(queue, state.kv_load_interval_s) if with_load else None
        head = {"instance": eng.kv_instance, "block_size": eng.blocks.block_size}

        def out(data: dict[str, Any]) -> str:
            return json.dumps(data) + "\n" if ndjson else sse(data)

        async def body() -> AsyncIterator[str]:
            try:
                while True:
                    wait_s = state.kv_keepalive_s if load is None else load.timeout(state.kv_keepalive_s)
                    try:
                        item = await asyncio.wait_for(queue.get(), wait_s)
                    except TimeoutError:
                        if load is not None and (record := load.take(eng.kv_instance)) is not None:
                            yield out(record)
                        else:
                            yield "\n" if ndjson else ": keep-alive\n\n"
                        continue
                    if item is None:
                        return  # fell behind: the client reconnects and gets a fresh snapshot
                    if item == LOAD_CHANGED:
                        if load is not None:
                            load.changed()
                    elif not isinstance(item, str):
                        seq, ev = item
                        data = {"type": ev.type, "seq": seq, "block_hashes": list(ev.block_hashes), **head}
                        if ev.ends is not None:  # stateful models: where a reused prefix may end
                            data["ends"] = list(ev.ends)
                        yield out(data)
                    if load is not None and queue.empty() and (record := load.take(eng.kv_instance)) is not None:
                        yield out(record)
            finally:
                if load is not None:
                    load.close()
                eng.unsubscribe_kv_events(queue)

        media = "application/x-ndjson" if ndjson else "text/event-stream"
        return StreamingResponse(body(), media_type=media, headers={"Cache-Control": "no-cache"})

    return app


def _resume_after(after: str | None, instance: str | None, current: str) -> int | None:
    """The seq to resume after, or None (start with a snapshot); a malformed ``after`` is a 400."""
    if after is None:
        return None
    if not after.isdigit() or len(after) > 18:
        raise APIError(400, "after: must be a non-negative integer", param="after")
    return int(after) if instance == current else None
