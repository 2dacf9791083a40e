"""Engine (OpenAI) responses → usage records and Anthropic Messages responses, streaming included."""

from __future__ import annotations

import json
import uuid
from typing import Any

from supernode.router.contracts import Usage

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def usage_from_openai(usage: Any) -> Usage:
    """The engine's `usage` object → Usage (DeepSeek and vLLM field names both understood)."""
    if not isinstance(usage, dict):
        return Usage()
    ptd = usage.get("prompt_tokens_details") or {}
    ctd = usage.get("completion_tokens_details") or {}
    cached = _int(ptd.get("cached_tokens")) if isinstance(ptd, dict) else 0
    cached = cached or _int(usage.get("prompt_cache_hit_tokens"))
    return Usage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        cached_tokens=cached,
        completion_tokens=_int(usage.get("completion_tokens")),
        reasoning_tokens=_int(ctd.get("reasoning_tokens")) if isinstance(ctd, dict) else 0,
    )


def anthropic_usage(u: Usage) -> dict[str, int]:
    return {"input_tokens": u.prompt_tokens - u.cached_tokens, "output_tokens": u.completion_tokens,
            "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def to_anthropic_message(resp: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A non-streaming chat completion → an Anthropic `message`."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": ""})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            args = {"_raw": fn.get("arguments")}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:20]}",
                        "name": fn.get("name", ""), "input": args})
    return {
        "id": message_id(), "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None, "usage": anthropic_usage(usage_from_openai(resp.get("usage"))),
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class AnthropicStream:
    """Turns OpenAI chat chunks into Anthropic stream events; one instance per response."""

    def __init__(self, model: str):
        self.model = model
        self.index = -1
        self.block: str | None = None  # "thinking" | "text" | "tool_use"
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool_call index → our block index
        self.finish_reason: str | None = None

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": message_id(), "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return sse("message_start", {"type": "message_start", "message": message}) + sse("ping", {"type": "ping"})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.block = kind
        return out + sse("content_block_start", {"type": "content_block_start", "index": self.index,
                                                 "content_block": block})

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        self.block = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                if self.block != "thinking":
                    out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]})
            if delta.get("content"):
                if self.block != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                i = call.get("index", 0)
                fn = call.get("function") or {}
                if i not in self.tool_blocks:
                    block = {"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:20]}",
                             "name": fn.get("name", ""), "input": {}}
                    out += self._open("tool_use", block)
                    self.tool_blocks[i] = self.index
                if fn.get("arguments"):
                    out += self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]})
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def finish(self, usage: Usage) -> bytes:
        """Everything up to and including `message_delta`; `message_stop` is sent after metering."""
        delta = {"stop_reason": STOP_REASONS.get(self.finish_reason or "stop", "end_turn"), "stop_sequence": None}
        return self._close() + sse("message_delta", {"type": "message_delta", "delta": delta,
                                                     "usage": anthropic_usage(usage)})

    @staticmethod
    def stop() -> bytes:
        return sse("message_stop", {"type": "message_stop"})
