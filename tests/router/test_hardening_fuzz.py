"""Issue 10: no request body makes the router answer 5xx. Hypothesis builds OpenAI and Anthropic bodies
(valid shapes with hostile values: lone surrogates, deep nesting, huge numbers, NaN/Infinity, wrong
types) and sends them over real HTTP to a router in front of a fake engine."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fake_engine import Behaviour, create_engine_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quick_uvicorn import QuickServer

from supernode.httpserver import limits_of, uvicorn_options
from supernode.router.app import create_app
from supernode.router.config import RouterConfig

MODEL = "deepseek-v4-flash"


class Served:
    """A uvicorn server on 127.0.0.1:0 in a thread of its own (hypothesis tests are synchronous)."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.server = QuickServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", **options))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
            threading.Event().wait(0.01)
        raise AssertionError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with Served(create_engine_app(Behaviour(name="e", answer_words=3))) as engine:
        (tmp / "endpoints.json").write_text(json.dumps({"endpoints": [{"url": engine, "model": MODEL}]}))
        config = RouterConfig.model_validate({
            "discovery": {"type": "static", "path": str(tmp / "endpoints.json")},
            "health": {"scrape_interval_s": 0}, "admission": {"anonymous": True},
            "models": {"context_tokens": {MODEL: 4096}, "max_tokens_limit": 4096},
            "timeouts": {"connect_s": 1, "first_byte_s": 5, "between_chunks_s": 5, "total_s": 10}})
        with Served(create_app(config), lifespan="on", **uvicorn_options(limits_of(config.server))) as url, \
                httpx.Client(base_url=url, timeout=30) as client:
            yield client


SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(st.characters(codec=None) | SURROGATE, max_size=40)
NUMBER = (st.integers() | st.integers(min_value=10**60, max_value=10**80) | st.floats(allow_nan=True)
          | st.sampled_from([0, -1, 2**63, 1e308]))
SCALAR = st.none() | st.booleans() | NUMBER | TEXT
ANY = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                   max_leaves=8)
CONTENT = TEXT | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "tool_result"]),
                                                 "text": TEXT}), max_size=3) | ANY
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]) | TEXT,
                                 "content": CONTENT})
COMMON = {"model": st.sampled_from([MODEL, "claude-sonnet-4", "deepseek-chat"]) | TEXT,
          "max_tokens": st.integers(min_value=-5, max_value=10) | NUMBER | TEXT,
          "stream": st.booleans() | ANY, "temperature": NUMBER | TEXT, "thinking": ANY}
OPENAI = st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=3) | ANY},
                               optional={**COMMON, "max_completion_tokens": NUMBER, "reasoning_effort": ANY,
                                         "stream_options": ANY, "n": NUMBER, "seed": NUMBER, "user": ANY})
COMPLETION = st.fixed_dictionaries({"prompt": TEXT | st.lists(NUMBER, max_size=3) | ANY}, optional=COMMON)
ANTHROPIC = st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=3) | ANY},
                                  optional={**COMMON, "system": CONTENT, "metadata": ANY, "tools": ANY,
                                            "tool_choice": ANY, "output_config": ANY, "top_k": NUMBER})
# Mostly well-formed bodies too, so that many reach translation, routing and the engine.
PLAIN = st.text(max_size=60)
GOOD_MESSAGES = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": PLAIN}),
                         min_size=1, max_size=3)
GOOD = {"model": st.sampled_from([MODEL, "claude-sonnet-4", "deepseek-chat", "deepseek-reasoner"]),
        "messages": GOOD_MESSAGES, "max_tokens": st.integers(min_value=1, max_value=8)}
TUNING = {"stream": st.booleans(), "temperature": st.floats(0, 2), "thinking": st.sampled_from(
    [{"type": "enabled"}, {"type": "disabled"}, {"type": "adaptive"}, {"type": "bogus"}, "on"])}
OPENAI = OPENAI | st.fixed_dictionaries(GOOD, optional={**TUNING, "reasoning_effort": st.sampled_from(
    ["low", "high", "max", "xhigh", "none", "weird"]), "stream_options": st.just({"include_usage": True})})
ANTHROPIC = ANTHROPIC | st.fixed_dictionaries(GOOD, optional={**TUNING, "system": PLAIN, "output_config": st.just(
    {"effort": "max"})})
COMPLETION = COMPLETION | st.fixed_dictionaries({"model": st.just(MODEL), "prompt": PLAIN,
                                                 "max_tokens": st.integers(1, 8)}, optional=TUNING)


@st.composite
def wrapped(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """A body, sometimes with a deeply nested or enormous value spliced in as raw JSON."""
    raw = json.dumps(draw(bodies), allow_nan=True).encode()  # lone surrogates become \\udXXX escapes
    extra = draw(st.sampled_from([b"", b"[" * 5000 + b"]" * 5000, b"9" * 5000, b"1e400", b"-Infinity",
                                  b'"\\udfff"']))
    if extra and raw.endswith(b"}") and raw != b"{}":
        raw = raw[:-1] + b', "x": ' + extra + b"}"
    return raw


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])


def post(client: httpx.Client, path: str, raw: bytes) -> None:
    r = client.post(path, content=raw, headers={"content-type": "application/json", "x-api-key": "k"})
    assert r.status_code < 500, (path, raw[:300], r.status_code, r.text[:300])


@FUZZ
@given(wrapped(OPENAI))
def test_openai_chat_bodies_never_get_a_5xx(router: httpx.Client, raw: bytes) -> None:
    post(router, "/v1/chat/completions", raw)


@FUZZ
@given(wrapped(COMPLETION))
def test_openai_completion_bodies_never_get_a_5xx(router: httpx.Client, raw: bytes) -> None:
    post(router, "/v1/completions", raw)


@FUZZ
@given(wrapped(ANTHROPIC))
def test_anthropic_bodies_never_get_a_5xx(router: httpx.Client, raw: bytes) -> None:
    post(router, "/v1/messages", raw)
