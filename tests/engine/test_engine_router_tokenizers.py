"""How the router gets tokenizers (fetched once per model from built-in engines, a local file for others,
none: approximate) and what the real token count changes (admission reserves it)."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

from supernode.api import chattokens as T
from supernode.api.chattemplate import TEMPLATE_ID, chat_prompt
from supernode.api.endpoints import Endpoint
from supernode.api.hashing import block_hashes
from supernode.api.models import Mode
from supernode.api.prompttokens import Piece, PieceCache
from supernode.router.admission.tenants import hash_key
from supernode.router.admission.testing import tenant, tenants_file
from supernode.router.apis.openai import parse_chat
from supernode.router.config import LocalTokenizer, RouterConfig
from supernode.router.contracts import PoolKey
from supernode.router.pipeline import prepare
from supernode.router.routing.state import EndpointTable
from supernode.router.tokens.metrics import TokenMetrics
from supernode.router.tokens.model import ModelTokenizer, file_tokenizer
from supernode.router.tokens.service import PromptTokens

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "router"))

from router_stack import MODEL, Stack, ep, wait_for
from router_tokens_harness import BLOCK, TOKEN, Engine, recorder, running

USER = [{"role": "user", "content": "What is the weather in Paris today, and should I take an umbrella with me?"}]


def fetches(st: Any, outcome: str) -> float:
    value = st.metrics.registry.get_sample_value("supernode_router_tokenizer_fetches_total",
                                                 {"model": MODEL, "outcome": outcome})
    return value or 0.0


async def test_tokenizer_fetched_once_per_model_and_asked_again_when_an_engine_returns(
    tmp_path: Path, server_thread: Any, tokenizer: Any, fake_runner_factory: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPERNODE_ENGINE_TOKEN", TOKEN)
    first, second = (Engine(tokenizer, fake_runner_factory(block_size=BLOCK)) for _ in range(2))
    loading = Engine(tokenizer, fake_runner_factory(block_size=BLOCK))
    stack = Stack(tmp_path)
    with server_thread(loading.app) as slow:  # its engine is still loading: 503 until it is set
        async with running(first, server_thread) as url1, running(second, server_thread) as url2:
            try:
                stack.write_endpoints([ep(slow.url), ep(url1)])
                await stack.router({"tokenizers": {"retry_s": 0.05}})
                assert stack.router_app is not None
                st = stack.router_app.state.router
                await wait_for(lambda: st.tokens.get(MODEL) is not None and fetches(st, "failed") >= 1, timeout=10)
                loaded = st.tokens.get(MODEL)
                assert loaded.source == "engine" and loaded.block_size == BLOCK and fetches(st, "loaded") == 1

                loading.engine.start()
                loading.state.engine = loading.engine  # loaded now: the retry gets 304 (same tokenizer)
                await wait_for(lambda: fetches(st, "unchanged") == 1, timeout=10)
                stack.write_endpoints([ep(slow.url), ep(url1), ep(url2)])  # a new group of the same model
                await wait_for(lambda: fetches(st, "unchanged") == 2, timeout=10)
                stack.write_endpoints([ep(slow.url), ep(url2)])
                await asyncio.sleep(0.2)  # discovery polls every 50 ms: the first engine is gone
                stack.write_endpoints([ep(slow.url), ep(url1), ep(url2)])  # back (a restart): asked again
                await wait_for(lambda: fetches(st, "unchanged") == 3, timeout=10)
                assert st.tokens.get(MODEL) is loaded and fetches(st, "loaded") == 1  # parsed once
            finally:
                await stack.close()
                await asyncio.to_thread(loading.engine.stop)


async def test_local_tokenizer_file_or_none_at_all(
    tmp_path: Path, server_thread: Any, tokenizer_dir: Path, tokenizer: Any,
    fake_runner_factory: Callable[..., Any],
) -> None:
    engine = Engine(tokenizer, fake_runner_factory(block_size=BLOCK), token=None)
    local = {"file": str(tokenizer_dir / "tokenizer.json"), "block_size": BLOCK}
    async with running(engine, server_thread) as url:
        for tokenizers, exact in (({"models": {MODEL: local}}, True), ({"fetch_from_engines": False}, False)):
            stack = Stack(tmp_path)
            try:
                stack.write_endpoints([ep(url, engineType="vllm")])  # an engine that serves no tokenizer
                router = await stack.router({"tokenizers": tokenizers})
                assert stack.router_app is not None
                st = stack.router_app.state.router
                preps, routed = recorder(stack.router_app)
                oa = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="k", max_retries=0)
                resp = await oa.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)  # type: ignore[arg-type]
                assert resp.usage is not None and fetches(st, "loaded") == 0
                result = "exact" if exact else "no_tokenizer"
                counted = st.metrics.registry.get_sample_value("supernode_router_prompt_tokenization_total",
                                                               {"model": MODEL, "result": result})
                assert counted == 1
                if exact:  # the file's tokenizer and block size: the engine's count and enough blocks
                    assert st.tokens.get(MODEL).source == "file"
                    assert preps[-1].prompt_tokens_estimate == resp.usage.prompt_tokens
                    assert len(routed[-1].token_block_hashes) == resp.usage.prompt_tokens // BLOCK
                else:  # approximate routing and an estimated count; the request is served all the same
                    assert preps[-1].prompt_token_ids is None and routed[-1].token_block_hashes == ()
                    assert routed[-1].block_hashes and preps[-1].prompt_tokens_estimate != resp.usage.prompt_tokens
                    ids = [5, 6, 7, 8, 9, 10, 11]  # a token-id prompt is counted exactly all the same
                    await oa.completions.create(model=MODEL, prompt=ids, max_tokens=2)
                    assert preps[-1].prompt_token_ids == tuple(ids) and preps[-1].prompt_tokens_estimate == len(ids)
                    assert routed[-1].token_block_hashes == ()
            finally:
                await stack.close()


def test_a_local_tokenizer_file_that_does_not_load_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ValueError, match=f"tokenizers.models.{MODEL}.file"):
        file_tokenizer(MODEL, LocalTokenizer(file=str(bad), block_size=BLOCK))


async def test_admission_reserves_the_real_prompt_token_count(
    tmp_path: Path, server_thread: Any, tokenizer: Any, fake_runner_factory: Callable[..., Any],
) -> None:
    """A prompt of characters the tokenizer never saw costs ~2 tokens per character, not the 1/4 the estimate
    assumes: the count admission reserves with (the prepared request's) is the engine's own count, and the
    tenant's TPM bucket, overdrawn by it, refuses the next small request."""
    runner = fake_runner_factory(block_size=BLOCK, num_kv_blocks=512)  # room for the ~800-token prompt
    engine = Engine(tokenizer, runner, token=None)
    tenants_file(tenant("acme").key("sk-acme").tpm(500)).write(tmp_path / "tenants.yaml")
    admission = {"tenants_file": str(tmp_path / "tenants.yaml"), "admin": {"key_sha256": hash_key("sk-admin")}}
    big: Any = [{"role": "user", "content": "ŧ" * 400}]
    stack = Stack(tmp_path)
    async with running(engine, server_thread) as url:
        try:
            stack.write_endpoints([ep(url)])
            router = await stack.router({"admission": admission})
            assert stack.router_app is not None
            st = stack.router_app.state.router
            await wait_for(lambda: st.tokens.get(MODEL) is not None, timeout=10)
            preps, _ = recorder(stack.router_app)
            oa = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="sk-acme", max_retries=0)
            common: dict[str, Any] = {"model": MODEL, "max_tokens": 6, "extra_body": {"thinking": {"type": "disabled"}}}
            done = await oa.chat.completions.create(messages=big, **common)
            real = preps[-1].prompt_tokens_estimate
            estimate = len(preps[-1].parsed.prompt_text) // 4
            assert done.usage is not None and done.usage.prompt_tokens == real
            assert done.usage.completion_tokens > 0 and runner.steps > 0  # the model really ran it
            assert real > 500 > estimate + 6 + 2 * (len("hi") + 20)  # the estimate would leave room for "hi"
            assert preps[-1].resolved.mode is Mode.NON_THINK
            with pytest.raises(openai.RateLimitError, match="tokens per minute"):
                await oa.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **common)
        finally:
            await stack.close()


def test_piece_cache_gives_the_engines_ids_and_stays_bounded(tokenizer: Any) -> None:
    system = "You are terse. " * 40
    pieces = [Piece(T.BOS, True), Piece(system), Piece(T.USER, True), Piece("hi <think> there"),
              Piece(T.ASSISTANT, True), Piece(T.THINK_OPEN, True)]
    cache = PieceCache(max_chars=len(system) + 10, min_chars=32)  # the user turn is too short to keep
    plain = tokenizer.encode_pieces(pieces)
    assert tokenizer.encode_pieces(pieces, cache) == plain == tokenizer.encode_pieces(pieces, cache)
    assert (cache.hits, cache.misses) == (1, 1) and cache.uncached_chars(pieces) == len("hi <think> there")
    cache.put("x" * 40, (1,))  # over the bound: the least recently used entry goes
    assert cache.get(system) is None and cache.get("x" * 40) == (1,)


async def test_a_spilled_request_is_hashed_for_the_pool_that_serves_it(tmp_path: Path, tokenizer: Any) -> None:
    config = RouterConfig.model_validate({"discovery": {"type": "static", "path": "x.json"}, "admission": None})
    table = EndpointTable()
    table.update([Endpoint(url="http://127.0.0.1:9", model=MODEL)])
    registry = CollectorRegistry()
    tokens = PromptTokens(TokenMetrics(registry), max_blocks=64)
    tokens.set(MODEL, ModelTokenizer(tokenizer, MODEL, BLOCK, TEMPLATE_ID, "d", "engine"))
    raw = json.dumps({"model": MODEL, "messages": USER, "reasoning_effort": "high"}).encode()
    prep = await tokens.apply(prepare(raw, parse_chat, anthropic=False, config=config, table=table,
                                      session_header=None))
    assert prep.resolved.mode is Mode.THINK_HIGH and prep.token_block_hashes
    assert await tokens.hashes_for(prep, PoolKey(MODEL, Mode.THINK_HIGH)) == prep.token_block_hashes
    spilled = await tokens.hashes_for(prep, PoolKey(MODEL, Mode.THINK_MAX))
    expected = tokenizer.encode_pieces(chat_prompt(USER, None, None, Mode.THINK_MAX, tool_tokens=True).pieces)
    reusable = expected[: (len(expected) - 1) // BLOCK * BLOCK]  # the last token is always computed
    assert spilled == tuple(block_hashes(reusable, MODEL, BLOCK)) != prep.token_block_hashes
    assert await tokens.hashes_for(prep, PoolKey("other-model", Mode.THINK_HIGH)) == ()  # no tokenizer: none
    # the DeepSeek-family tokenizer is encoded by the C fast encoder, which the metrics show
    assert registry.get_sample_value("supernode_router_prompt_encoder", {"model": MODEL, "encoder": "fast"}) == 1
    assert (registry.get_sample_value("supernode_router_pretoken_cache_entries", {"model": MODEL}) or 0) > 3
    assert registry.get_sample_value("supernode_router_prompt_encoder_fallbacks_total", {"model": MODEL}) == 0


async def test_a_tokenizer_that_cannot_encode_the_template_leaves_the_request_approximate(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    plain = HFTokenizer(models.BPE())  # a vLLM model's tokenizer, say: none of DeepSeek's control tokens
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    plain.train_from_iterator(["hello world"] * 4, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    plain.save(str(tmp_path / "tokenizer.json"))
    registry = CollectorRegistry()
    tokens = PromptTokens(TokenMetrics(registry), max_blocks=64)
    tokens.set(MODEL, file_tokenizer(MODEL, LocalTokenizer(file=str(tmp_path / "tokenizer.json"), block_size=BLOCK)))
    config = RouterConfig.model_validate({"discovery": {"type": "static", "path": "x.json"}, "admission": None})
    table = EndpointTable()
    table.update([Endpoint(url="http://127.0.0.1:9", model=MODEL)])
    raw = json.dumps({"model": MODEL, "messages": USER}).encode()
    prep = prepare(raw, parse_chat, anthropic=False, config=config, table=table, session_header=None)
    assert await tokens.apply(prep) is prep  # served all the same, with the estimate
    counted = registry.get_sample_value("supernode_router_prompt_tokenization_total",
                                        {"model": MODEL, "result": "unrenderable"})
    assert counted == 1
    assert registry.get_sample_value("supernode_router_prompt_encoder", {"model": MODEL, "encoder": "library"}) == 1


async def test_a_relayed_reply_is_cached_for_the_next_turn(
    tmp_path: Path, server_thread: Any, tokenizer: Any, fake_runner_factory: Callable[..., Any],
) -> None:
    """The router encodes a chat reply it relayed (streamed or not) in the background: the next turn, which
    sends the reply back as its assistant message, finds the ids the engine gives that text cached."""
    engine = Engine(tokenizer, fake_runner_factory(block_size=BLOCK), token=None)
    stack = Stack(tmp_path)
    async with running(engine, server_thread) as url:
        try:
            stack.write_endpoints([ep(url)])
            router = await stack.router()
            assert stack.router_app is not None
            st = stack.router_app.state.router
            await wait_for(lambda: st.tokens.get(MODEL) is not None, timeout=10)
            model_tok = st.tokens.get(MODEL)
            model_tok.cache.min_chars = 4  # the fake model's replies are short
            oa = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
            common: dict[str, Any] = {"model": MODEL, "max_tokens": 24,
                                      "extra_body": {"thinking": {"type": "disabled"}}}
            stream = await oa.chat.completions.create(messages=USER, stream=True, **common)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            other: Any = [{"role": "user", "content": "Name three rivers of Europe, longest first."}]
            unary = await oa.chat.completions.create(messages=other, **common)
            replies = [streamed, unary.choices[0].message.content or ""]
            assert replies[0] != replies[1] and min(map(len, replies)) >= 4
            for reply in replies:
                await wait_for(lambda r=reply: not model_tok.cache.uncached_chars([Piece(r)]), timeout=5)
                assert model_tok.cache.get(reply) == tuple(tokenizer.encode_text(reply))
            counted = st.metrics.registry.get_sample_value("supernode_router_reply_texts_total",
                                                           {"model": MODEL, "outcome": "cached"})
            assert counted == 2
        finally:
            await stack.close()


def test_replies_waiting_to_be_encoded_are_bounded(tokenizer: Any) -> None:
    """At most ``max_pending_replies`` relayed replies wait to be encoded; more are skipped (counted busy)."""
    tokens = PromptTokens(TokenMetrics(CollectorRegistry()), max_blocks=64, max_pending_replies=1)
    tokens.set(MODEL, ModelTokenizer(tokenizer, MODEL, BLOCK, TEMPLATE_ID, "d", "file"))
    model_tok = tokens.get(MODEL)
    assert model_tok is not None
    gate, encode = threading.Event(), model_tok.tokenizer.encode_pieces
    model_tok.tokenizer.encode_pieces = lambda *a: gate.wait(10) and encode(*a)  # type: ignore[method-assign]
    first, second = "the first reply " * 40, "the second reply " * 40
    try:
        assert tokens.remember_reply("other-model", first) is None  # no tokenizer for it
        assert tokens.remember_reply(MODEL, "too short") is None
        pending = tokens.remember_reply(MODEL, first)
        assert pending is not None and tokens.remember_reply(MODEL, second) is None  # one waits already
        assert tokens.metrics.replies.labels(MODEL, "busy")._value.get() == 1
        gate.set()
        pending.result(timeout=10)
        assert model_tok.cache.get(first) == tuple(tokenizer.encode_text(first))
        assert tokens.remember_reply(MODEL, first) is None  # cached already
        later = tokens.remember_reply(MODEL, second)  # nothing waits any more
        assert later is not None and later.result(timeout=10)
    finally:
        gate.set()
        tokens.close()


def test_hashes_count_only_the_blocks_an_engine_can_reuse(tokenizer: Any) -> None:
    tok = ModelTokenizer(tokenizer, MODEL, BLOCK, TEMPLATE_ID, "d", "engine")
    ids = list(range(3 * BLOCK))
    assert len(tok.hashes(ids, 64)) == 2  # exactly three blocks: the engine computes the last token, so its block
    assert len(tok.hashes([*ids, 7], 64)) == 3
    assert tok.hashes([*ids, 7], 64)[:2] == tok.hashes(ids, 64) == tuple(block_hashes(ids[:2 * BLOCK], MODEL, BLOCK))
    assert len(tok.hashes([*ids, 7], 2)) == 2 and tok.hashes([], 64) == tok.hashes(ids[:BLOCK], 64) == ()
