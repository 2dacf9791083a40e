"""A small OpenAI-compatible fake engine for router tests and benchmarks (real HTTP via uvicorn).

It answers chat/completions (streaming and not) with `reasoning_content` when the mode asks for
thinking, reports usage (prompt, cached, completion, reasoning tokens), serves `/health` and vLLM-named
`/metrics`, and can simulate a prefix cache (LRU of N blocks; prefill cost ∝ uncached blocks; its
changes are published on `/v1/kv_events` as the built-in engine does, see fake_kv_cache.py),
limited concurrency, slow or failing starts and hangs. For the routing benchmark it can also tokenize
for real and serve its tokenizer, and take TTFT from a slot model (fake_sim.py). Run standalone:
`python tests/router/fake_engine.py --port 8101 [--cache-blocks N --block-cost-ms X --concurrency C]
[--tokenizer FILE --block-tokens B] [--modelled-ttft]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

sys.path.insert(0, os.path.dirname(__file__))
from fake_kv_cache import BLOCK, FakeKVCache, add_kv_events_route, prompt_hashes
from fake_sim import EngineTokens, SlotModel, add_stats_route, modelled_slot


@dataclass
class Behaviour:
    name: str = "engine"
    fail_status: int | None = None  # answer this status before any byte
    fail_error: Any = None  # a dict: extra fields of that answer's `error` object (code, param); else its `error`
    first_byte_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    hang_after_first_chunk: bool = False
    fail_after_words: int = 0  # streaming: drop the connection after this many words (0 = never)
    answer_words: int = 6
    cache_blocks: int = 0  # 0 = no prefix cache simulation
    block_cost_s: float = 0.0  # prefill time per uncached block
    decode_s: float = 0.0  # time per generated chunk when simulating
    concurrency: int = 0  # 0 = unlimited
    tokens: EngineTokens | None = None  # cache blocks of real token ids (and GET /v1/tokenizer), else of bytes
    modelled_ttft: bool = False  # streams: slots and TTFT from fake_sim.SlotModel (GET /ttfts)


@dataclass
class EngineState:
    behaviour: Behaviour
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: int = 0
    completed: int = 0
    running: int = 0
    waiting: int = 0
    cache: FakeKVCache = field(default_factory=lambda: FakeKVCache(0))
    hit_blocks: int = 0
    total_blocks: int = 0
    semaphore: asyncio.Semaphore | None = None
    slots: SlotModel = field(default_factory=lambda: SlotModel(0))
    ttfts: list[float] = field(default_factory=list)  # modelled, of streamed requests

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in ("running", "waiting") and "cache" in self.__dict__:  # load records on /v1/kv_events
            self.cache.load.set(self.running, self.waiting)


def render(body: dict[str, Any]) -> str:
    if "messages" in body:
        parts = []
        for m in body["messages"]:
            c = m.get("content")
            text = c if isinstance(c, str) else "".join(p.get("text", "") for p in c or [] if isinstance(p, dict))
            parts.append(f"<|{m.get('role', '')}|>{text}\n")
        return "".join(parts)
    p = body.get("prompt", "")
    return p if isinstance(p, str) else json.dumps(p)


def prefill(state: EngineState, body: dict[str, Any]) -> tuple[int, int]:
    """Look up and insert the prompt's blocks in the LRU; (cached blocks, total blocks)."""
    tokens = state.behaviour.tokens
    keys = tokens.hashes(body) if tokens is not None and "messages" in body else prompt_hashes(body)
    hit = state.cache.prefill(keys)
    state.hit_blocks += hit
    state.total_blocks += len(keys)
    return hit, len(keys)


def create_engine_app(behaviour: Behaviour | None = None) -> FastAPI:
    app = FastAPI()
    st = EngineState(behaviour or Behaviour())
    st.cache = FakeKVCache(st.behaviour.cache_blocks)
    add_kv_events_route(app, st.cache)
    add_stats_route(app, st.ttfts)
    if st.behaviour.tokens is not None:
        st.behaviour.tokens.add_route(app)
    st.slots = SlotModel(st.behaviour.concurrency)
    if st.behaviour.concurrency and not st.behaviour.modelled_ttft:
        st.semaphore = asyncio.Semaphore(st.behaviour.concurrency)
    app.state.engine = st

    def plan(body: dict[str, Any]) -> tuple[list[str], list[str], dict[str, Any], float]:
        b = st.behaviour
        kwargs = body.get("chat_template_kwargs") or {}
        thinking = bool(kwargs.get("thinking"))
        text = render(body)
        prompt_tokens = max(1, len(text) // 4)
        cached_tokens, prefill_s = 0, 0.0
        if b.cache_blocks:
            hit, total = prefill(st, body)
            cached_tokens = hit * BLOCK // 4
            prefill_s = (total - hit) * b.block_cost_s
        limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 10_000)
        reasoning = [f"think{i} " for i in range(3)] if thinking else []
        words = [f"{b.name}-w{i} " for i in range(b.answer_words)]
        reasoning, words = reasoning[:limit], words[: max(0, limit - len(reasoning))]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(reasoning) + len(words),
                 "total_tokens": prompt_tokens + len(reasoning) + len(words),
                 "prompt_tokens_details": {"cached_tokens": cached_tokens},
                 "completion_tokens_details": {"reasoning_tokens": len(reasoning)}}
        return reasoning, words, usage, prefill_s

    @contextlib.asynccontextmanager
    async def slot() -> AsyncIterator[None]:
        st.waiting += 1
        try:
            if st.semaphore:
                await st.semaphore.acquire()
        finally:
            st.waiting -= 1
        st.running += 1
        try:
            yield
        finally:
            st.running -= 1
            if st.semaphore:
                st.semaphore.release()

    async def generate(request: Request, chat: bool) -> Response:
        body = await request.json()
        st.requests.append(body)
        b = st.behaviour
        if b.fail_status:
            error = b.fail_error if b.fail_error is not None and not isinstance(b.fail_error, dict) else \
                {"message": f"{b.name} failing", **(b.fail_error or {})}
            return JSONResponse({"error": error}, status_code=b.fail_status)
        if b.first_byte_delay_s and not body.get("stream"):
            await asyncio.sleep(b.first_byte_delay_s)
        rid = f"cmpl-{len(st.requests)}"
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            async with slot():
                reasoning, words, usage, prefill_s = plan(body)
                if prefill_s or b.decode_s:
                    await asyncio.sleep(prefill_s + b.decode_s * len(words))
            st.completed += 1
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": "".join(words)}
                if reasoning:
                    msg["reasoning_content"] = "".join(reasoning)
                choice: dict[str, Any] = {"index": 0, "message": msg, "finish_reason": "stop"}
            else:
                choice = {"index": 0, "text": "".join(words), "finish_reason": "stop"}
            return JSONResponse({"id": rid, "object": obj, "created": created, "model": body.get("model"),
                                 "choices": [choice], "usage": usage})

        async def events() -> AsyncIterator[bytes]:
            def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None) -> bytes:
                choices = [] if delta is None else (
                    [{"index": 0, "delta": delta, "finish_reason": finish}] if chat
                    else [{"index": 0, "text": delta.get("content", ""), "finish_reason": finish}])
                data: dict[str, Any] = {"id": rid, "object": obj + ".chunk", "created": created,
                                        "model": body.get("model"), "choices": choices}
                if usage is not None:
                    data["usage"] = usage
                return f"data: {json.dumps(data)}\n\n".encode()

            try:
                async with slot() if not b.modelled_ttft else modelled_slot(st) as at:
                    reasoning, words, usage, prefill_s = plan(body)
                    if at is not None:
                        first = await at(prefill_s, b.decode_s * len(words))
                    else:
                        await asyncio.sleep(b.first_byte_delay_s + prefill_s)
                    yield chunk({"role": "assistant", "content": ""})
                    if b.hang_after_first_chunk:
                        await asyncio.sleep(3600)
                    for piece in reasoning:
                        yield chunk({"reasoning_content": piece})
                    for i, piece in enumerate(words):
                        if b.fail_after_words and i == b.fail_after_words:
                            raise RuntimeError(f"{b.name}: failing mid-stream on purpose")
                        if at is not None:
                            await asyncio.sleep(max(0.0, first + (i + 1) * b.decode_s - time.monotonic()))
                        elif b.chunk_delay_s or b.decode_s:
                            await asyncio.sleep(b.chunk_delay_s or b.decode_s)
                        yield chunk({"content": piece})
                    yield chunk({}, finish="stop")
                    if (body.get("stream_options") or {}).get("include_usage"):
                        yield chunk(None, usage=usage)
                    yield b"data: [DONE]\n\n"
                st.completed += 1
            except (asyncio.CancelledError, GeneratorExit):
                st.cancelled += 1
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await generate(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, False)

    @app.post("/generate")
    async def sglang_generate(request: Request) -> Response:
        return JSONResponse({"text": "ok"})

    @app.post("/reset")
    async def reset() -> Response:
        """Benchmarks: empty the cache and counters between runs."""
        st.cache.clear()  # published as "cleared": routers following the events forget this engine's blocks
        st.requests.clear()
        st.hit_blocks = st.total_blocks = st.completed = st.cancelled = 0
        st.ttfts.clear()
        return JSONResponse({"ok": True})

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=503 if st.behaviour.fail_status else 200)

    @app.get("/v1/models")
    async def models() -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    @app.get("/get_model_info")
    @app.get("/model_info")
    async def model_info() -> Response:
        return JSONResponse({"model_path": "fake", "tokenizer_path": None, "is_generation": True})

    @app.get("/get_server_info")
    @app.get("/server_info")
    async def server_info() -> Response:
        return JSONResponse({"model_path": "fake", "disaggregation_mode": "null"})

    @app.get("/metrics")
    async def metrics() -> Response:
        text = (f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{model_name=\"fake\"}} "
                f"{st.running}\nvllm:num_requests_waiting{{model_name=\"fake\"}} {st.waiting}\n"
                f"vllm:gpu_cache_usage_perc{{model_name=\"fake\"}} "
                f"{len(st.cache) / st.behaviour.cache_blocks if st.behaviour.cache_blocks else 0.0}\n"
                f"fake:prefix_hit_blocks_total {st.hit_blocks}\nfake:prefix_blocks_total {st.total_blocks}\n"
                f"fake:requests_completed_total {st.completed}\n")
        return Response(text, media_type="text/plain")

    return app


async def serve_many(ports: list[int], make: Callable[[int], Behaviour]) -> None:
    """Several engines in one process (one event loop): a cheap simulated fleet."""
    servers = [uvicorn.Server(uvicorn.Config(create_engine_app(make(i)), host="127.0.0.1", port=p,
                                             log_level="warning", access_log=False)) for i, p in enumerate(ports)]
    await asyncio.gather(*(s.serve() for s in servers))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, nargs="+", required=True, help="one engine per port, all in this process")
    ap.add_argument("--name", default="engine")
    ap.add_argument("--cache-blocks", type=int, default=0)
    ap.add_argument("--block-cost-ms", type=float, default=0.0)
    ap.add_argument("--decode-ms", type=float, default=0.0)
    ap.add_argument("--concurrency", type=int, default=0)
    ap.add_argument("--answer-words", type=int, default=6)
    ap.add_argument("--tokenizer", help="a tokenizer.json: cache blocks of real token ids, served at /v1/tokenizer")
    ap.add_argument("--block-tokens", type=int, default=16, help="tokens per cache block (with --tokenizer)")
    ap.add_argument("--model", default="deepseek-v4-flash", help="the served model (its tokenizer's hash seed)")
    ap.add_argument("--modelled-ttft", action="store_true", help="streams: TTFT from a slot model (GET /ttfts)")
    a = ap.parse_args()
    tokens = None
    if a.tokenizer:
        with open(a.tokenizer) as f:
            tokens = EngineTokens(f.read(), a.model, a.block_tokens)

    def make(i: int) -> Behaviour:
        return Behaviour(name=f"{a.name}{i}", cache_blocks=a.cache_blocks, block_cost_s=a.block_cost_ms / 1000,
                         decode_s=a.decode_ms / 1000, concurrency=a.concurrency, answer_words=a.answer_words,
                         tokens=tokens, modelled_ttft=a.modelled_ttft)

    asyncio.run(serve_many(a.port, make))


if __name__ == "__main__":
    main()
