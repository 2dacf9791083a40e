"""OpenAI response and stream-chunk shapes (chat and completions), with DeepSeek usage fields."""

from __future__ import annotations

import json
import time
from typing import Any

from supernode.engine.llm_engine import Output


def usage(final: Output) -> dict[str, Any]:
    cached = final.cached_tokens
    return {
        "prompt_tokens": final.prompt_tokens,
        "completion_tokens": final.completion_tokens,
        "total_tokens": final.prompt_tokens + final.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "prompt_cache_hit_tokens": cached,
        "prompt_cache_miss_tokens": final.prompt_tokens - cached,
        "completion_tokens_details": {"reasoning_tokens": final.reasoning_tokens},
    }


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class Envelope:
    """Common fields of every object of one response."""

    def __init__(self, request_id: str, model: str, chat: bool) -> None:
        self.id, self.model, self.chat = request_id, model, chat
        self.created = int(time.time())

    def wrap(self, choices: list[dict[str, Any]], stream: bool, **extra: Any) -> dict[str, Any]:
        obj = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": f"{obj}.chunk" if stream and self.chat else obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def chat_message(self, reasoning: str, content: str, final: Output, thinking: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["reasoning_content"] = reasoning
        choice = {"index": 0, "message": message, "finish_reason": final.finish_reason, "logprobs": None}
        return self.wrap([choice], stream=False, usage=usage(final))

    def chat_chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self.wrap([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], stream=True)

    def completion(self, text: str, final: Output, token_ids: list[int] | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": final.finish_reason, "logprobs": None}
        if token_ids is not None:
            choice["token_ids"] = token_ids
        return self.wrap([choice], stream=False, usage=usage(final))

    def completion_chunk(self, text: str, token_ids: list[int] | None, finish_reason: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        if token_ids is not None:
            choice["token_ids"] = token_ids
        return self.wrap([choice], stream=True)

    def usage_chunk(self, final: Output) -> dict[str, Any]:
        return self.wrap([], stream=True, usage=usage(final))
