"""The APIs through the official SDKs: chat + completions, streaming and not, the three modes,
aliases, /v1/models, `supernode status`. Depends on: engine serve, router (OpenAI + Anthropic),
admission (tenant keys), local runtime."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx

from supernode.api import constants as C

HELLO = [{"role": "user", "content": "Hello! Say something."}]
NON_THINK = {"thinking": {"type": "disabled"}}


def reasoning_of(obj: Any) -> Any:
    """`reasoning_content` as the OpenAI SDK exposes unknown fields (None when absent)."""
    return getattr(obj, "reasoning_content", None)


def test_v1_models_lists_what_is_deployed(stack: Any) -> None:
    ids = {m.id for m in stack.openai().models.list()}
    assert {stack.PRO, stack.FLASH} <= ids


def test_chat_non_think_has_content_and_no_reasoning(stack: Any) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=stack.FLASH, messages=HELLO, max_tokens=8, extra_body=NON_THINK)
    r = raw.parse()
    msg = r.choices[0].message
    assert isinstance(msg.content, str)
    assert reasoning_of(msg) is None
    assert r.usage is not None and r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 0
    assert raw.headers[C.HEADER_SERVED_MODE] == C.MODE_NON_THINK


def test_chat_think_high_returns_reasoning_content(stack: Any) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=stack.FLASH, messages=HELLO, max_tokens=8, reasoning_effort="high")
    r = raw.parse()
    assert isinstance(reasoning_of(r.choices[0].message), str)
    assert raw.headers[C.HEADER_SERVED_MODE] == C.MODE_THINK_HIGH
    details = r.usage.completion_tokens_details if r.usage else None
    assert details is not None and (details.reasoning_tokens or 0) >= 1


def test_chat_think_max_on_pro_streams_reasoning_deltas(stack: Any) -> None:
    stream = stack.openai().chat.completions.create(
        model=stack.PRO, messages=HELLO, max_tokens=8, reasoning_effort="max", stream=True,
        stream_options={"include_usage": True})
    saw_reasoning, finish, usage = False, None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            saw_reasoning |= reasoning_of(choice.delta) is not None
            finish = choice.finish_reason or finish
    assert finish in ("stop", "length")
    assert saw_reasoning, "thinking streams send choices[0].delta.reasoning_content"
    assert usage is not None and usage.completion_tokens >= 1
    assert (usage.completion_tokens_details.reasoning_tokens or 0) >= 1  # type: ignore[union-attr]


def test_chat_non_think_stream_has_no_reasoning_deltas(stack: Any) -> None:
    stream = stack.openai().chat.completions.create(
        model=stack.PRO, messages=HELLO, max_tokens=8, stream=True, extra_body=NON_THINK)
    chunks = list(stream)
    assert chunks and all(reasoning_of(c.choices[0].delta) is None for c in chunks if c.choices)
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_completions_plain_and_streaming(stack: Any) -> None:
    client = stack.openai()
    r = client.completions.create(model=stack.FLASH, prompt="The capital of France is", max_tokens=6)
    assert isinstance(r.choices[0].text, str) and r.usage is not None and r.usage.completion_tokens >= 1
    chunks = list(client.completions.create(model=stack.FLASH, prompt="Once upon a time", max_tokens=6, stream=True))
    assert chunks and any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_aliases_resolve_with_the_mode_they_imply(stack: Any) -> None:
    client = stack.openai()
    for alias, mode in (("deepseek-chat", C.MODE_NON_THINK), ("deepseek-reasoner", C.MODE_THINK_HIGH)):
        raw = client.chat.completions.with_raw_response.create(model=alias, messages=HELLO, max_tokens=4)
        assert raw.headers[C.HEADER_SERVED_MODEL] == stack.FLASH, alias
        assert raw.headers[C.HEADER_SERVED_MODE] == mode, alias
        assert (reasoning_of(raw.parse().choices[0].message) is not None) == (mode != C.MODE_NON_THINK)


def test_anthropic_messages_thinking_blocks_only_when_thinking(stack: Any) -> None:
    client = stack.anthropic()
    thinking = client.messages.create(model=stack.PRO, max_tokens=8, messages=HELLO,
                                      thinking={"type": "enabled", "budget_tokens": 1024})
    assert thinking.content[0].type == "thinking"
    assert thinking.usage.output_tokens >= 1
    plain = client.messages.create(model=stack.PRO, max_tokens=8, messages=HELLO, thinking={"type": "disabled"})
    assert all(b.type != "thinking" for b in plain.content)
    assert plain.stop_reason in ("end_turn", "max_tokens")


def test_anthropic_streaming_and_claude_names_map_to_flash(stack: Any) -> None:
    client = stack.anthropic()
    with client.messages.stream(model="claude-sonnet-5", max_tokens=8, messages=HELLO,
                                thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    assert "message_start" in events and "message_stop" in events
    assert final.model in (stack.FLASH, "claude-sonnet-5")
    assert any(b.type == "thinking" for b in final.content)


def test_status_shows_the_running_stack(stack: Any) -> None:
    out = subprocess.run([sys.executable, "-m", "supernode.cli", "status", "--state-dir", str(stack.state_dir)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    for unit in ("router", "pro/0", "flash/0", "flash/1"):
        assert unit in out.stdout
    assert stack.PRO in out.stdout and stack.FLASH in out.stdout
    assert httpx.get(f"{stack.url}/health", timeout=5).status_code == 200


def test_the_router_encodes_prompts_with_each_engines_tokenizer(stack: Any) -> None:
    """Each model's tokenizer comes from its real engine processes (GET /v1/tokenizer with the engine token
    `supernode up` hands both sides); the router then counts and hashes prompts in the engines' tokens."""
    router_log = stack.state_dir / "logs" / "router.log"

    def loaded() -> bool:
        text = router_log.read_text() if router_log.exists() else ""
        return all(f"tokenizer for {model}: engine" in text for model in (stack.FLASH, stack.PRO))

    stack.wait_for("the router to load both models' tokenizers from their engines", loaded)
    resp = stack.openai().chat.completions.create(model=stack.FLASH, messages=HELLO, max_tokens=4,
                                                  extra_body=NON_THINK)
    assert resp.usage is not None and resp.usage.prompt_tokens > 0
    assert "not used" not in router_log.read_text()  # no engine's answer was refused
