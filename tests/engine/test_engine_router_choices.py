"""`n` choices end to end: the OpenAI SDK → router (a tenant with limits, the usage ledger) → the built-in
engine's HTTP app and loop over a real tiny-v4 checkpoint. The router forwards `n`, reserves n * max_tokens
of completion, and bills every choice's tokens, streamed or not."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from supernode.engine.chat import ReasoningBudgets
from supernode.engine.checkpoint import init_checkpoint
from supernode.engine.llm_engine import EngineOptions, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.runner import EngineConfig, ModelRunner
from supernode.engine.server.app import ServerState, build_app
from supernode.engine.tokenizer import Tokenizer
from supernode.router.admission.tenants import hash_key
from supernode.router.admission.testing import TenantBuilder, tenant, tenants_file

sys.path.insert(0, str(Path(__file__).parents[1] / "router"))

from router_stack import MODEL, Stack, ep, ledger_rows, wait_for

KEY = "sk-choices-1"
PROMPT = "the quick brown fox"


@dataclass(frozen=True)
class Routed:
    url: str  # the router's
    prompt_tokens: int  # PROMPT's tokens, as the engine counts them and the router (with its tokenizer) reserves


RouterFor = Callable[[Callable[[int], TenantBuilder]], Awaitable[Routed]]  # the tenant, given the prompt's tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-v4")
    init_checkpoint(str(path), "tiny-v4", seed=5)
    return path


@pytest.fixture
async def router_for(tmp_path: Path, server_thread: Any, model_dir: Path) -> AsyncIterator[RouterFor]:
    """A router in front of a real engine, with one tenant (KEY) limited as the test says."""
    runner = ModelRunner(EngineConfig(str(model_dir), num_kv_blocks=256, cpu_threads=1, max_num_seqs=16))
    engine = LLMEngine(runner, Tokenizer.from_dir(model_dir), EngineOptions(MODEL, 4096, max_num_seqs=16),
                       EngineMetrics(MODEL))  # fmt: skip
    state = ServerState(MODEL, engine.metrics, budgets=ReasoningBudgets(16, 16))
    state.engine = engine
    stack = Stack(tmp_path)
    engine.start()

    async def start(limited: Callable[[int], TenantBuilder]) -> Routed:
        async with httpx.AsyncClient(timeout=30) as h:  # straight to the engine: nothing billed
            r = await h.post(f"{served.url}/v1/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 1})
        prompt_tokens = r.json()["usage"]["prompt_tokens"]
        tenants_file(limited(prompt_tokens).key(KEY)).write(tmp_path / "tenants.yaml")
        stack.write_endpoints([ep(served.url)])
        url = await stack.router({
            "admission": {"tenants_file": str(tmp_path / "tenants.yaml"), "admin": {"key_sha256": hash_key("a")},
                          "queue": {"dispatch_interval_seconds": 0}},
            "metering": {"ledger_path": str(tmp_path / "usage.sqlite3")},
            "timeouts": {"first_byte_s": 30, "between_chunks_s": 30, "total_s": 60},
        })  # fmt: skip
        assert stack.router_app is not None
        st = stack.router_app.state.router
        await wait_for(lambda: st.tokens.get(MODEL) is not None, timeout=20)  # exact prompt counts from here on
        return Routed(url, prompt_tokens)

    try:
        with server_thread(build_app(state)) as served:
            try:
                yield start
            finally:  # before the engine's server stops: the router's KV-event stream would hold it open
                await stack.close()
    finally:
        await asyncio.to_thread(engine.stop)


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)


async def test_n_choices_collected_and_streamed_are_billed_in_full(router_for: RouterFor, tmp_path: Path) -> None:
    oa = client((await router_for(lambda _: tenant("acme"))).url)
    sampling: dict[str, Any] = {"temperature": 1.0, "seed": 7, "logprobs": 0, "extra_body": {"ignore_eos": True}}
    resp = await oa.completions.create(model=MODEL, prompt=PROMPT, n=3, max_tokens=6, **sampling)
    assert sorted(c.index for c in resp.choices) == [0, 1, 2]
    assert all(c.finish_reason == "length" and c.logprobs and len(c.logprobs.tokens or []) == 6 for c in resp.choices)
    assert resp.usage is not None and resp.usage.completion_tokens == 18
    row = ledger_rows(tmp_path)[-1]
    assert row["status"] == "ok"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (resp.usage.prompt_tokens, 18)

    stream = await oa.completions.create(model=MODEL, prompt=PROMPT, n=3, max_tokens=5, stream=True,
                                         stream_options={"include_usage": True}, **sampling)  # fmt: skip
    tokens, finished, usage = {0: 0, 1: 0, 2: 0}, set(), None
    async for chunk in stream:
        for c in chunk.choices:
            tokens[c.index] += len((c.logprobs and c.logprobs.tokens) or [])
            if c.finish_reason:
                finished.add(c.index)
        usage = chunk.usage or usage
    assert tokens == {0: 5, 1: 5, 2: 5} and finished == {0, 1, 2}
    assert usage is not None and usage.completion_tokens == 15
    row = ledger_rows(tmp_path)[-1]
    assert row["status"] == "ok"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, 15)

    # chat: every choice relayed, billed as the engine counted
    no_thinking = {"ignore_eos": True, "thinking": {"type": "disabled"}}
    chat = await oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}], n=2,
                                            max_tokens=4, temperature=1.0, seed=3, extra_body=no_thinking)  # fmt: skip
    assert sorted(c.index for c in chat.choices) == [0, 1] and chat.usage is not None
    assert chat.usage.completion_tokens == 8 and ledger_rows(tmp_path)[-1]["completion_tokens"] == 8

    # a stream abandoned part way is billed for the tokens relayed on every choice
    stream = await oa.completions.create(model=MODEL, prompt=PROMPT, n=3, max_tokens=3000, stream=True, **sampling)
    seen: dict[int, int] = {}
    async for chunk in stream:
        for c in chunk.choices:
            seen[c.index] = seen.get(c.index, 0) + len((c.logprobs and c.logprobs.tokens) or [])
        if len(seen) == 3 and min(seen.values()) >= 4:
            break
    await stream.close()
    for _ in range(500):
        if (row := ledger_rows(tmp_path)[-1])["status"] != "open":
            break
        await asyncio.sleep(0.02)
    assert row["status"] == "cancelled" and sum(seen.values()) <= row["completion_tokens"] < 9000, (row, seen)


async def test_n_times_max_tokens_is_reserved_and_n_beyond_16_is_refused(
    router_for: RouterFor, tmp_path: Path
) -> None:
    # a monthly quota of the prompt + 30: three choices of max_tokens 20 are granted 30 completion tokens
    # together, so each choice is asked for 10 (one choice alone would have been asked for 20)
    url = (await router_for(lambda prompt: tenant("acme").quota(prompt + 30))).url
    oa = client(url)
    resp = await oa.completions.create(model=MODEL, prompt=PROMPT, n=3, max_tokens=20, logprobs=0,
                                       extra_body={"ignore_eos": True})  # fmt: skip
    assert [len(c.logprobs.tokens or []) if c.logprobs else 0 for c in resp.choices] == [10, 10, 10]
    assert resp.usage is not None and resp.usage.completion_tokens == 30
    assert ledger_rows(tmp_path)[-1]["completion_tokens"] == 30
    with pytest.raises(openai.RateLimitError):  # the quota is spent
        await oa.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)
    async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {KEY}"}) as h:
        r = await h.post(f"{url}/v1/chat/completions",
                         json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 17})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
