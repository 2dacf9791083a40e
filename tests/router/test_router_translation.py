"""Parsers and Anthropic ↔ OpenAI translation (pure), including property tests of the parsers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supernode.api.endpoints import Endpoint
from supernode.router.apis.anthropic import parse_messages
from supernode.router.apis.common import load_json
from supernode.router.apis.openai import parse_chat, parse_completion
from supernode.router.apis.responses import AnthropicStream, to_anthropic_message, usage_from_openai
from supernode.router.config import RouterConfig
from supernode.router.contracts import Usage
from supernode.router.errors import InvalidRequest, RouterError
from supernode.router.pipeline import prepare
from supernode.router.routing.state import EndpointTable

LIMIT = 1000


def test_anthropic_request_translation_with_tools_thinking_and_results() -> None:
    body = {
        "model": "claude-sonnet-4-6", "max_tokens": 64, "system": [{"type": "text", "text": "sys"}],
        "stop_sequences": ["END"], "temperature": 0.5, "top_k": 5, "metadata": {"user_id": "u1"},
        "tools": [{"name": "get", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get"},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                              {"type": "text", "text": "calling"},
                                              {"type": "tool_use", "id": "t1", "name": "get", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                                         {"type": "text", "text": "thanks"}]},
        ],
    }
    p = parse_messages(body, max_tokens_limit=LIMIT)
    assert p.api == "anthropic-messages" and p.user == "u1" and p.max_tokens == 64
    b = p.body
    assert b["stop"] == ["END"] and b["top_k"] == 5 and b["temperature"] == 0.5
    assert b["tool_choice"] == {"type": "function", "function": {"name": "get"}}
    assert b["tools"][0]["function"]["parameters"] == {"type": "object"}
    msgs = b["messages"]
    assert msgs[0] == {"role": "system", "content": "sys"}
    assert msgs[2]["reasoning_content"] == "hmm" and msgs[2]["content"] == "calling"
    assert json.loads(msgs[2]["tool_calls"][0]["function"]["arguments"]) == {"a": 1}
    assert msgs[3] == {"role": "tool", "tool_call_id": "t1", "content": "42"}
    assert msgs[4] == {"role": "user", "content": "thanks"}


def test_anthropic_rejects_images_with_a_named_field() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]}
    with pytest.raises(InvalidRequest) as e:
        parse_messages(body, max_tokens_limit=LIMIT)
    assert e.value.param == "messages.0.content.0.type"


def test_non_streaming_response_translation() -> None:
    resp = {"choices": [{"message": {"content": "hello", "reasoning_content": "think", "tool_calls": [
        {"id": "c1", "function": {"name": "f", "arguments": "{\"x\": 2}"}}]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4,
                  "prompt_tokens_details": {"cached_tokens": 6}}}
    m = to_anthropic_message(resp, model="claude-x")
    assert [c["type"] for c in m["content"]] == ["thinking", "text", "tool_use"]
    assert m["content"][2]["input"] == {"x": 2} and m["stop_reason"] == "tool_use"
    assert m["usage"] == {"input_tokens": 4, "output_tokens": 4, "cache_read_input_tokens": 6,
                          "cache_creation_input_tokens": 0}


def _events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        if block.strip():
            out.append(json.loads(block.split("data: ", 1)[1]))
    return out


def test_stream_translation_orders_blocks_and_ends_with_usage() -> None:
    s = AnthropicStream("claude-x")
    data = s.start()
    for delta in ({"role": "assistant", "content": ""}, {"reasoning_content": "a"}, {"reasoning_content": "b"},
                  {"content": "x"}, {"content": "y"}):
        data += s.feed({"choices": [{"delta": delta}]})
    data += s.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f"}}]}}]})
    data += s.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]})
    data += s.feed({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]})
    data += s.finish(Usage(prompt_tokens=5, completion_tokens=3)) + s.stop()
    types = [(e["type"], e.get("index"), (e.get("delta") or e.get("content_block") or {}).get("type"))
             for e in _events(data)]
    assert types == [
        ("message_start", None, None), ("ping", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None), ("message_delta", None, None), ("message_stop", None, None),
    ]
    final = _events(data)[-2]
    assert final["delta"]["stop_reason"] == "tool_use" and final["usage"]["output_tokens"] == 3


def test_usage_understands_deepseek_and_vllm_fields() -> None:
    assert usage_from_openai({"prompt_tokens": 10, "prompt_cache_hit_tokens": 7, "completion_tokens": 2,
                              "completion_tokens_details": {"reasoning_tokens": 1}}) == Usage(10, 7, 2, 1)
    assert usage_from_openai(None) == Usage()
    assert usage_from_openai({"prompt_tokens": -3, "prompt_tokens_details": None}) == Usage()


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**12}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 17}, "n"),  # the engine's limit is 16
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
])
def test_openai_chat_bad_input_names_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_chat(body, max_tokens_limit=LIMIT)
    assert e.value.param == param


def test_n_choices_are_parsed_and_anthropic_has_none() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert parse_chat({**chat, "n": 16}, max_tokens_limit=LIMIT).n == 16
    assert parse_chat(chat, max_tokens_limit=LIMIT).n == 1
    assert parse_completion({"model": "m", "prompt": "hi", "n": 3}, max_tokens_limit=LIMIT).n == 3
    with pytest.raises(InvalidRequest) as e:
        parse_completion({"model": "m", "prompt": "hi", "n": 17}, max_tokens_limit=LIMIT)
    assert e.value.param == "n"
    messages = parse_messages({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "n": 3},
                              max_tokens_limit=LIMIT)  # fmt: skip
    assert messages.n == 1 and "n" not in messages.body


def test_completions_prompt_forms() -> None:
    assert parse_completion({"model": "m", "prompt": "hi"}, max_tokens_limit=LIMIT).prompt_text == "hi"
    assert parse_completion({"model": "m", "prompt": ["hi"]}, max_tokens_limit=LIMIT).prompt_text == "hi"
    assert parse_completion({"model": "m", "prompt": [1, 2]}, max_tokens_limit=LIMIT).prompt_text == "1 2"
    assert parse_completion({"model": "m", "prompt": [1, 2]}, max_tokens_limit=LIMIT).extra["token_id_prompt"]
    assert not parse_completion({"model": "m", "prompt": "hi"}, max_tokens_limit=LIMIT).extra.get("token_id_prompt")
    with pytest.raises(InvalidRequest):
        parse_completion({"model": "m", "prompt": ["a", "b"]}, max_tokens_limit=LIMIT)


def test_load_json_rejects_non_objects() -> None:
    for raw in (b"", b"[1]", b"\xff\xfe", b"{", b"null", b'"s"'):
        with pytest.raises(InvalidRequest):
            load_json(raw)


# --- property tests: any JSON-ish body yields a 4xx RouterError or a valid parse, never a crash ---------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**15), max_value=10**15) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)
KEYS = ["model", "messages", "max_tokens", "stream", "thinking", "reasoning_effort", "output_config", "system",
        "prompt", "stop_sequences", "tools", "tool_choice", "metadata", "n", "user", "stream_options", "role",
        "content"]
bodies = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "x"]),
                                           "content": json_values}), max_size=3)

_TABLE = EndpointTable()
_TABLE.update([Endpoint(url="http://e", model="deepseek-v4-flash")])
_CONFIG = RouterConfig.model_validate({"discovery": {"type": "static", "path": "x.json"}, "admission": None})


def _check(raw: bytes, parser: Any, anthropic: bool) -> None:
    try:
        prepare(raw, parser, anthropic=anthropic, config=_CONFIG, table=_TABLE, session_header=None)
    except RouterError as e:
        assert 400 <= e.status < 500, e


@settings(max_examples=150, deadline=None)
@given(body=bodies, msgs=messages, model=st.sampled_from(["deepseek-v4-flash", "deepseek-chat", "claude-opus-4",
                                                           "nope", ""]))
def test_prepare_never_crashes_on_arbitrary_bodies(body: dict[str, Any], msgs: list[Any], model: str) -> None:
    body = {"model": model, "messages": msgs, **body} if msgs else {"model": model, **body}
    raw = json.dumps(body).encode()
    for parser, anthropic in ((parse_chat, False), (parse_completion, False), (parse_messages, True)):
        _check(raw, parser, anthropic)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=64))
def test_prepare_never_crashes_on_arbitrary_bytes(raw: bytes) -> None:
    _check(raw, parse_chat, False)
    _check(raw, parse_messages, True)


def test_sse_splitter_reassembles_events_across_chunks() -> None:
    from supernode.router.sse import SseSplitter, data_of, has_token, tokens_in

    sp = SseSplitter()
    assert sp.feed(b"data: {\"a\"") == []
    assert sp.feed(b": 1}\n\ndata: [DONE]\r\n\r\n: keep") == [b'data: {"a": 1}', b"data: [DONE]"]
    assert sp.feed(b"-alive\n\n") == [b": keep-alive"]
    assert data_of(b": keep-alive") is None and data_of(b"event: x\ndata: 5") == "5"
    assert has_token({"delta": {"reasoning_content": "r"}}) and has_token({"text": "t"})
    assert not has_token({"delta": {"role": "assistant", "content": ""}}) and not has_token(None)
    # log-probability entries count tokens exactly (a step's text may hold several, or none yet)
    assert tokens_in({"index": 2, "text": "ab", "logprobs": {"tokens": ["a", "b"], "token_logprobs": [0, 0]}}) == 2
    assert tokens_in({"index": 0, "text": "", "logprobs": {"tokens": ["\\xe2"]}}) == 1
    assert tokens_in({"delta": {"content": "x"}, "logprobs": {"content": [{"token": "x"}]}}) == 1
    assert tokens_in({"delta": {"reasoning_content": "r"}, "logprobs": None}) == 1
    assert tokens_in({"delta": {"content": ""}}) == 0 and tokens_in(None) == 0


def test_reply_text_is_the_first_choices_content() -> None:
    from supernode.router.sse import reply_text

    assert reply_text({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}}]}) == "Paris."
    two = [{"index": 1, "delta": {"content": "b"}}, {"index": 0, "delta": {"content": "a"}}]
    assert reply_text({"choices": two}) == "a"
    assert reply_text({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]}) == ""
    assert reply_text({"choices": [{"index": 0, "message": {"content": None, "tool_calls": []}}]}) == ""
    assert reply_text({"usage": {"prompt_tokens": 3}}) == reply_text([]) == reply_text({"choices": "x"}) == ""
