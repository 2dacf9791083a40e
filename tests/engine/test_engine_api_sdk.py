"""logprobs, n > 1 and tool calls through the official OpenAI SDK, against the engine loop + HTTP app on
127.0.0.1 with a scripted fake model (the random-weight model cannot be made to call a tool)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import torch

from supernode.api import chattokens as T
from supernode.engine.chat import ReasoningBudgets
from supernode.engine.llm_engine import EngineOptions, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.server.app import ServerState, build_app
from supernode.engine.tokenizer import Tokenizer

MODEL = "tiny"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL_TEXT = f'{T.TOOL_CALLS_BEGIN}{T.TOOL_CALL_BEGIN}get_weather{T.TOOL_SEP}{{"city": "Paris"}}{T.TOOL_CALL_END}'


class Served:
    def __init__(self, server_thread: Any, tokenizer: Tokenizer, runner: Any, model: str = MODEL, **opts: Any) -> None:
        self.runner, self.tokenizer = runner, tokenizer
        options = EngineOptions(model, 4096, **{"max_num_seqs": 8, **opts})
        self.engine = LLMEngine(runner, tokenizer, options, EngineMetrics(model))
        state = ServerState(model, self.engine.metrics, budgets=ReasoningBudgets(64, 64))
        state.engine = self.engine
        self.server = server_thread(build_app(state))

    def __enter__(self) -> Served:
        self.engine.start()
        self.server.__enter__()
        self.url = self.server.url
        self.client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        self.server.__exit__(*exc)
        self.engine.stop()

    def logits_after(self, context: list[int]) -> torch.Tensor:
        """The logits the fake model returned for exactly this context."""
        return next(row for ctx, row in reversed(self.runner.rows) if ctx == context)


def script(tokenizer: Tokenizer, text: str) -> list[int]:
    return [*tokenizer.encode(text), tokenizer.eos_id]


@pytest.fixture
def served(server_thread: Any, tokenizer: Tokenizer, scripted: Any) -> Iterator[Served]:
    with Served(server_thread, tokenizer, scripted(script(tokenizer, "hello world"))) as s:
        yield s


NON_THINK: dict[str, Any] = {"extra_body": {"thinking": {"type": "disabled"}}}


def test_chat_logprobs_match_the_model_distribution(served: Served) -> None:
    msgs: Any = [{"role": "user", "content": "hi"}]
    resp = served.client.chat.completions.create(
        model=MODEL, messages=msgs, logprobs=True, top_logprobs=3, temperature=0, **NON_THINK
    )
    choice = resp.choices[0]
    assert choice.message.content == "hello world" and choice.logprobs and choice.logprobs.content
    entries = choice.logprobs.content
    generated = [*served.tokenizer.encode("hello world"), served.tokenizer.eos_id]
    assert len(entries) == len(generated)
    prompt = served.runner.rows[0][0]
    for i, (entry, token) in enumerate(zip(entries, generated, strict=True)):
        expected = torch.log_softmax(served.logits_after(prompt + generated[:i]), -1)
        assert entry.logprob == pytest.approx(float(expected[token]), abs=1e-5)
        assert bytes(entry.bytes or []) == served.tokenizer.token_bytes(token)
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token  # scripted = argmax
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(expected.topk(3).values.tolist(), abs=1e-5)
    text = "".join(bytes(e.bytes or []).decode() for e in entries[:-1])
    assert text == "hello world"
    # streaming carries the same entries, chunk by chunk
    stream = served.client.chat.completions.create(
        model=MODEL, messages=msgs, logprobs=True, top_logprobs=3, temperature=0, stream=True, **NON_THINK
    )
    streamed = [
        e for chunk in stream for c in chunk.choices if c.logprobs and c.logprobs.content for e in c.logprobs.content
    ]
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in entries]


def test_thinking_tokens_have_no_logprobs_in_chat(served: Served) -> None:
    resp = served.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True, max_tokens=40
    )
    msg: Any = resp.choices[0].message
    assert msg.reasoning_content  # the budget forced </think>; only answer tokens are reported
    content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else None
    assert content is not None and "".join(bytes(e.bytes or []).decode("utf-8", "replace") for e in content).startswith(
        msg.content or "\x00"
    )


def test_completions_logprobs_and_n(served: Served) -> None:
    resp = served.client.completions.create(model=MODEL, prompt="hi", max_tokens=30, logprobs=2, temperature=0)
    lp = resp.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset is not None
    assert resp.choices[0].text == "hello world" and resp.choices[0].finish_reason == "stop"
    assert "".join(lp.tokens) == "hello world" + T.EOS  # the stop token is reported too
    assert all(
        len(top) <= 2 and max(top.values()) == pytest.approx(v)
        for top, v in zip(lp.top_logprobs, lp.token_logprobs, strict=True)
    )
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    many = served.client.completions.create(
        model=MODEL, prompt="hi", max_tokens=3, n=3, seed=7, extra_body={"return_token_ids": True}
    )
    assert sorted(c.index for c in many.choices) == [0, 1, 2]
    counts = [len(c.model_dump()["token_ids"]) for c in many.choices]
    assert many.usage is not None and many.usage.completion_tokens == sum(counts) and all(1 <= n <= 3 for n in counts)


def test_chat_n_choices_stream_and_collect(served: Served) -> None:
    msgs: Any = [{"role": "user", "content": "hi"}]
    resp = served.client.chat.completions.create(model=MODEL, messages=msgs, n=3, temperature=0, **NON_THINK)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert {c.message.content for c in resp.choices} == {"hello world"}  # greedy: identical choices
    per_choice = len(served.tokenizer.encode("hello world")) + 1
    assert (
        resp.usage.completion_tokens == 3 * per_choice
        and resp.usage.prompt_tokens == served.runner.rows[0][0].__len__()
    )
    stream = served.client.chat.completions.create(
        model=MODEL, messages=msgs, n=2, temperature=0, stream=True, stream_options={"include_usage": True}, **NON_THINK
    )
    text: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    usage = None
    for chunk in stream:
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
        usage = chunk.usage or usage
    assert text == {0: "hello world", 1: "hello world"} and finishes == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 2 * per_choice


@pytest.mark.parametrize("thinking", [False, True])
def test_tool_call_through_the_openai_sdk(
    server_thread: Any, tokenizer: Tokenizer, scripted: Any, thinking: bool
) -> None:
    prefix = f"let me look{T.THINK_CLOSE}" if thinking else ""
    ids = script(tokenizer, f"{prefix}Checking.{CALL_TEXT}{T.TOOL_CALLS_END}")
    extra: dict[str, Any] = {} if thinking else NON_THINK
    with Served(server_thread, tokenizer, scripted(ids)) as s:
        msgs: Any = [{"role": "user", "content": "weather in Paris?"}]
        resp = s.client.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], temperature=0, **extra)
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
        assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
        call: Any = choice.message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        if thinking:
            assert getattr(choice.message, "reasoning_content", None) == "let me look"
        # the prompt the model saw holds the catalogue
        assert "get_weather" in tokenizer.decode(s.runner.rows[0][0])

        stream = s.client.chat.completions.create(
            model=MODEL,
            messages=msgs,
            tools=[WEATHER],
            temperature=0,
            stream=True,
            **extra,
        )
        names, args, ids_seen, finish, content = [], "", [], None, ""
        for chunk in stream:
            for c in chunk.choices:
                content += c.delta.content or ""
                for d in c.delta.tool_calls or []:
                    if d.id:
                        ids_seen.append(d.id)
                        names.append(d.function.name if d.function else None)
                    args += (d.function.arguments or "") if d.function else ""
                finish = c.finish_reason or finish
        assert names == ["get_weather"] and len(ids_seen) == 1 and json.loads(args) == {"city": "Paris"}
        assert finish == "tool_calls" and content == "Checking."

        # the result goes back as a tool message; the next prompt carries the call and the output
        follow = [
            *msgs,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        again = s.client.chat.completions.create(model=MODEL, messages=follow, tools=[WEATHER], max_tokens=2, **extra)
        assert again.choices[0].finish_reason
        seen = s.runner.rows[-1][0]
        out_begin, sep = tokenizer.token_id(T.TOOL_OUTPUT_BEGIN), tokenizer.token_id(T.TOOL_SEP)
        assert out_begin in seen and sep in seen and "sunny" in tokenizer.decode(seen)


def test_tool_choice_forced_and_none(server_thread: Any, tokenizer: Tokenizer, scripted: Any) -> None:
    ids = script(tokenizer, f'{{"city": "Oslo"}}{T.TOOL_CALL_END}{T.TOOL_CALLS_END}')
    with Served(server_thread, tokenizer, scripted(ids)) as s:
        msgs: Any = [{"role": "user", "content": "weather?"}]
        forced: Any = {"type": "function", "function": {"name": "get_weather"}}
        resp = s.client.chat.completions.create(
            model=MODEL,
            messages=msgs,
            tools=[WEATHER],
            tool_choice=forced,
            temperature=0,
            **NON_THINK,
        )
        call: Any = (resp.choices[0].message.tool_calls or [None])[0]
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
        with pytest.raises(openai.BadRequestError) as err:  # forcing needs non-think mode
            s.client.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], tool_choice="required")
        assert err.value.body["param"] == "tool_choice"  # type: ignore[index]
        plain = s.client.chat.completions.create(
            model=MODEL,
            messages=msgs,
            tools=[WEATHER],
            tool_choice="none",
            temperature=0,
            max_tokens=12,
            **NON_THINK,
        )
        assert plain.choices[0].message.tool_calls is None and "get_weather" not in tokenizer.decode(
            s.runner.rows[-1][0]
        )


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_both_endpoints_stream_exactly_what_they_collect(
    server_thread: Any, tokenizer: Tokenizer, scripted: Any, endpoint: str
) -> None:
    """Chat and completions share one answer path: per choice, the streamed text equals the collected one."""
    with Served(server_thread, tokenizer, scripted(script(tokenizer, "hello world"), margin=0.0)) as served:
        _stream_vs_collect(served, endpoint)


def _stream_vs_collect(served: Served, endpoint: str) -> None:
    common: dict[str, Any] = {"model": MODEL, "n": 2, "seed": 11, "max_tokens": 6, "temperature": 1.5}
    if endpoint == "chat":
        create: Any = served.client.chat.completions.create
        common |= {"messages": [{"role": "user", "content": "hi"}], **NON_THINK}
    else:
        create = served.client.completions.create
        common |= {"prompt": "hi"}
    whole = create(**common)
    streamed = {0: "", 1: ""}
    for chunk in create(stream=True, **common):
        for c in chunk.choices:
            streamed[c.index] += (c.delta.content or "") if endpoint == "chat" else c.text
    collected = {c.index: (c.message.content if endpoint == "chat" else c.text) for c in whole.choices}
    assert streamed == collected and collected[0] != collected[1]  # seeds 11 and 12 differ


def test_prompt_logprobs_with_echo_as_eval_harnesses_ask(
    server_thread: Any, tokenizer: Tokenizer, scripted: Any
) -> None:
    """lm-eval's loglikelihood request: token-id prompt, echo, logprobs=1, max_tokens=1; the prompt is
    computed in chunks and even a cached prefix is recomputed (its positions need logits)."""
    runner = scripted(script(tokenizer, "hello world"))
    prompt = tokenizer.encode("the quick brown fox jumps over the lazy dog; supernode serves models")
    with Served(server_thread, tokenizer, runner, max_num_batched_tokens=4) as s:
        assert len(prompt) > 12  # three or more prefill chunks
        s.client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)  # warms the prefix cache
        resp = s.client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=1, echo=True, logprobs=1, temperature=0
        )
        choice = resp.choices[0]
        lp = choice.logprobs
        assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
        n = len(prompt)
        assert len(lp.tokens) == n + 1 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert choice.text.startswith("the quick brown fox") and "".join(lp.tokens[:n]) == tokenizer.decode(prompt)
        for i in range(1, n):
            expected = torch.log_softmax(runner.logits(prompt[:i]), -1)
            assert lp.token_logprobs[i] == pytest.approx(float(expected[prompt[i]]), abs=1e-5)
            assert len(lp.top_logprobs[i]) == 1
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(n + 1)]
        assert resp.usage is not None and resp.usage.prompt_tokens_details is not None
        assert resp.usage.prompt_tokens_details.cached_tokens == 0  # recomputed despite the warm cache
        streamed = s.client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=1, echo=True, logprobs=1, temperature=0, stream=True
        )
        chunks = [c.choices[0] for c in streamed if c.choices]
        text = "".join(c.text for c in chunks)
        values = [v for c in chunks if c.logprobs for v in (c.logprobs.token_logprobs or [])]
        assert text == choice.text and values == pytest.approx(lp.token_logprobs)
        # max_tokens=0: only score the prompt (streamed or not)
        for stream in (False, True):
            got = s.client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=1, stream=stream
            )
            parts = [c.choices[0] for c in got] if stream else [got.choices[0]]  # type: ignore[union-attr]
            assert "".join(p.text for p in parts) == tokenizer.decode(prompt)
            scores = [v for p in parts if p.logprobs for v in (p.logprobs.token_logprobs or [])]
            assert scores == pytest.approx(lp.token_logprobs[:n]) and parts[-1].finish_reason == "length"
        with pytest.raises(openai.BadRequestError):
            s.client.completions.create(model=MODEL, prompt=prompt, max_tokens=0)
