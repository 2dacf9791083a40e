"""Issue 10 on the engine: bodies that are not strict JSON (lone surrogates, NaN/Infinity, overflowing
floats, huge integers, deep nesting) are 400s in the OpenAI shape, never 500s (real uvicorn)."""

from __future__ import annotations

from typing import Any

import httpx

from supernode.engine.llm_engine import EngineOptions, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.server.app import ServerState, build_app
from supernode.engine.tokenizer import Tokenizer

MODEL = "tiny"
HEAD = b'{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": '
BAD = {
    "lone surrogate": HEAD + b'"\\udc00"}]}',
    "NaN": HEAD + b'"x"}], "temperature": NaN}',
    "Infinity": HEAD + b'"x"}], "top_p": Infinity}',
    "float overflow": HEAD + b'"x"}], "temperature": 1e400}',
    "huge integer": HEAD + b'"x"}], "seed": ' + b"7" * 6000 + b"}",
    "deep nesting": HEAD + b'"x"}], "extra": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
}


def test_not_strict_json_is_a_400_and_the_engine_keeps_serving(
        server_thread: Any, tokenizer: Tokenizer, fake_runner_factory: Any) -> None:
    metrics = EngineMetrics(MODEL)
    engine = LLMEngine(fake_runner_factory(), tokenizer, EngineOptions(MODEL, max_num_seqs=4, max_model_len=128),
                       metrics)
    state = ServerState(MODEL, metrics)
    state.engine = engine
    engine.start()
    try:
        with server_thread(build_app(state)) as server, httpx.Client(base_url=server.url, timeout=20) as client:
            for case, body in BAD.items():
                r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
                assert r.status_code == 400, (case, r.text[:300])
                assert r.json()["error"]["code"] == "invalid_json", case
            ok = client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 2,
                                                           "messages": [{"role": "user", "content": "hi"}]})
            assert ok.status_code == 200
    finally:
        engine.stop()
