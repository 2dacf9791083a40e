"""The engine's chat route reads a request's mode through supernode.api.modes (the router's rule too)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from supernode.api import modes as M
from supernode.api.models import Mode
from supernode.engine.llm_engine import EngineOptions, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.server.app import ServerState, build_app
from supernode.engine.tokenizer import Tokenizer


def test_chat_route_uses_the_api_mode_rule(
    monkeypatch: pytest.MonkeyPatch, server_thread: Any, tokenizer: Tokenizer, fake_runner_factory: Any
) -> None:
    seen: list[str] = []
    real = M.effort_mode

    def spy(effort: Any, param: str) -> Mode | None:
        seen.append(param)
        return real(effort, param)

    monkeypatch.setattr(M, "effort_mode", spy)
    metrics = EngineMetrics("tiny")
    engine = LLMEngine(fake_runner_factory(), tokenizer, EngineOptions("tiny", max_num_seqs=4, max_model_len=128),
                       metrics)
    state = ServerState("tiny", metrics)
    state.engine = engine
    engine.start()
    try:
        with server_thread(build_app(state)) as server, httpx.Client(base_url=server.url, timeout=20) as client:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            r = client.post("/v1/chat/completions", json={**body, "reasoning_effort": "xhigh"})
            assert r.status_code == 200 and r.headers["x-supernode-mode"] == "think-max"
            kwargs = M.template_kwargs(Mode.NON_THINK)  # what the router sends
            r = client.post("/v1/chat/completions", json={**body, "chat_template_kwargs": kwargs})
            assert r.headers["x-supernode-mode"] == "non-think"
            bad = client.post("/v1/chat/completions", json={**body, "reasoning_effort": "huge"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "reasoning_effort"
    finally:
        engine.stop()
    assert seen == ["reasoning_effort", "chat_template_kwargs.reasoning_effort", "reasoning_effort"]
