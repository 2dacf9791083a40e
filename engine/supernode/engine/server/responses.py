"""OpenAI response and stream-chunk shapes (chat and completions), with DeepSeek usage fields.

Both endpoints answer through one path (``server/choices.py``); what differs is only the shape of a
chunk and of the final body, which a format object (``ChatFormat`` / ``CompletionFormat``) builds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from supernode.engine.llm_engine import Output, RequestHandle
from supernode.engine.logprobs import TokenLogprob
from supernode.engine.tokenizer import Tokenizer
from supernode.engine.tool_calls import ToolCallDelta


def usage(finals: Sequence[Output]) -> dict[str, Any]:
    """One request's usage over its choices: the prompt counts once, completions add up."""
    first = finals[0]
    cached, prompt = first.cached_tokens, first.prompt_tokens
    completion = sum(f.completion_tokens for f in finals)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "prompt_cache_hit_tokens": cached,
        "prompt_cache_miss_tokens": prompt - cached,
        "completion_tokens_details": {"reasoning_tokens": sum(f.reasoning_tokens for f in finals)},
    }


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass(slots=True)
class Choice:
    """One choice of a response (one engine sequence), with everything it produced so far."""

    index: int
    handle: RequestHandle
    reasoning: str = ""
    content: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] | None = None
    final: Output | None = None

    def absorb(self, out: Output) -> None:
        self.reasoning += out.delta.reasoning
        self.content += out.delta.content
        self.token_ids += out.token_ids
        self.logprobs += out.logprobs
        if out.prompt_logprobs is not None:
            self.prompt_logprobs = out.prompt_logprobs
        for d in out.delta.tool_calls:
            merge_tool_call(self.tool_calls, d)
        if out.finish_reason is not None:
            self.final = out

    @property
    def wants_logprobs(self) -> bool:
        return self.handle.seq.params.logprobs is not None

    def finish_reason(self, out: Output) -> str | None:
        reason = out.finish_reason
        return "tool_calls" if reason == "stop" and self.tool_calls else reason


def merge_tool_call(calls: list[dict[str, Any]], d: ToolCallDelta) -> None:
    if d.id is not None:
        calls.append({"id": d.id, "type": "function", "function": {"name": d.name, "arguments": d.arguments}})
    elif 0 <= d.index < len(calls):
        calls[d.index]["function"]["arguments"] += d.arguments


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

    def usage_chunk(self, finals: Sequence[Output]) -> dict[str, Any]:
        return self.wrap([], stream=True, usage=usage(finals))


class Format(Protocol):
    """What differs between the two endpoints: the shapes of chunks and of the final body."""

    env: Envelope

    def opening(self, c: Choice) -> dict[str, Any] | None: ...

    def chunk(self, c: Choice, out: Output) -> dict[str, Any] | None: ...

    def body(self, choices: Sequence[Choice]) -> dict[str, Any]: ...


def _token_text(tok: Tokenizer, token_id: int) -> tuple[str, list[int]]:
    raw = tok.token_bytes(token_id)
    return raw.decode("utf-8", errors="replace"), list(raw)


class ChatFormat:
    def __init__(self, env: Envelope, tokenizer: Tokenizer, thinking: bool) -> None:
        self.env, self.tok, self.thinking = env, tokenizer, thinking

    def _logprobs(self, c: Choice, items: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        if not c.wants_logprobs:
            return None
        content = []
        for lp in items:
            if lp.reasoning:
                continue  # the answer's tokens only (reasoning_content has none)
            text, raw = _token_text(self.tok, lp.token_id)
            top = []
            for tid, value in lp.top:
                t, b = _token_text(self.tok, tid)
                top.append({"token": t, "logprob": value, "bytes": b})
            content.append({"token": text, "logprob": lp.logprob, "bytes": raw, "top_logprobs": top})
        return {"content": content, "refusal": None}

    def opening(self, c: Choice) -> dict[str, Any] | None:
        return self._chunk(c, {"role": "assistant", "content": ""}, None, None)

    def _chunk(self, c: Choice, delta: dict[str, Any], reason: str | None, lps: Any) -> dict[str, Any]:
        choice = {"index": c.index, "delta": delta, "finish_reason": reason, "logprobs": lps}
        return self.env.wrap([choice], stream=True)

    def chunk(self, c: Choice, out: Output) -> dict[str, Any] | None:
        delta: dict[str, Any] = {}
        if out.delta.reasoning:
            delta["reasoning_content"] = out.delta.reasoning
        if out.delta.content:
            delta["content"] = out.delta.content
        if out.delta.tool_calls:
            delta["tool_calls"] = [d.openai() for d in out.delta.tool_calls]
        lps = self._logprobs(c, out.logprobs)
        if out.finish_reason is not None:
            return self._chunk(c, delta, c.finish_reason(out), lps)
        if delta or (lps and lps["content"]):
            return self._chunk(c, delta, None, lps)
        return None

    def body(self, choices: Sequence[Choice]) -> dict[str, Any]:
        out = []
        for c in choices:
            assert c.final is not None
            message: dict[str, Any] = {"role": "assistant", "content": c.content}
            if self.thinking:
                message["reasoning_content"] = c.reasoning
            if c.tool_calls:
                message["tool_calls"] = c.tool_calls
                message["content"] = c.content or None
            reason = c.finish_reason(c.final)
            out.append(
                {
                    "index": c.index,
                    "message": message,
                    "finish_reason": reason,
                    "logprobs": self._logprobs(c, c.logprobs),
                }
            )
        return self.env.wrap(out, stream=False, usage=usage([c.final for c in choices if c.final is not None]))


class CompletionFormat:
    """Completions shapes. ``prompt_ids`` (return_token_ids) adds token ids; ``echo_ids`` (echo + logprobs)
    puts the prompt's tokens first in ``logprobs`` (the first has none: nothing precedes it)."""

    def __init__(
        self, env: Envelope, tokenizer: Tokenizer, echo: str, prompt_ids: list[int] | None, echo_ids: list[int]
    ) -> None:
        self.env, self.tok, self.echo = env, tokenizer, echo
        self.prompt_ids, self.echo_ids = prompt_ids, echo_ids
        self._offsets: dict[int, int] = {}

    def _logprobs(self, c: Choice, items: Sequence[TokenLogprob], prompt: bool = False) -> dict[str, Any] | None:
        if not c.wants_logprobs:
            return None
        tokens: list[str] = []
        values: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        offsets: list[int] = []
        if prompt and self.echo_ids:
            first = _token_text(self.tok, self.echo_ids[0])[0]
            tokens, values, tops, offsets = [first], [None], [None], [0]
            self._offsets[c.index] = len(first)
            items = [*(c.prompt_logprobs or []), *items]
        for lp in items:
            text, _ = _token_text(self.tok, lp.token_id)
            offsets.append(self._offsets.get(c.index, len(self.echo)))
            self._offsets[c.index] = offsets[-1] + len(text)
            tokens.append(text)
            values.append(lp.logprob)
            tops.append({_token_text(self.tok, tid)[0]: value for tid, value in lp.top})
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    def _choice(self, c: Choice, text: str, reason: str | None, ids: list[int], lps: Any) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": c.index, "text": text, "finish_reason": reason, "logprobs": lps}
        if self.prompt_ids is not None:
            choice["token_ids"] = ids
        return choice

    def opening(self, c: Choice) -> dict[str, Any] | None:
        if not self.echo or self.echo_ids:  # with the prompt's log-probabilities the echo goes with the first token
            return None
        return self.env.wrap([self._choice(c, self.echo, None, [], None)], stream=True)

    def chunk(self, c: Choice, out: Output) -> dict[str, Any] | None:
        text = out.delta.reasoning + out.delta.content
        first = out.prompt_logprobs is not None
        if first and self.echo_ids:
            text = self.echo + text
        if not (text or out.finish_reason or (self.prompt_ids is not None and out.token_ids) or out.logprobs):
            return None
        lps = self._logprobs(c, out.logprobs, prompt=first)
        return self.env.wrap([self._choice(c, text, out.finish_reason, out.token_ids, lps)], stream=True)

    def body(self, choices: Sequence[Choice]) -> dict[str, Any]:
        out = []
        for c in choices:
            assert c.final is not None
            self._offsets.pop(c.index, None)
            text = self.echo + c.reasoning + c.content
            lps = self._logprobs(c, c.logprobs, prompt=True)
            choice = self._choice(c, text, c.final.finish_reason, c.token_ids, lps)
            if self.prompt_ids is not None:
                choice["prompt_token_ids"] = self.prompt_ids
            out.append(choice)
        return self.env.wrap(out, stream=False, usage=usage([c.final for c in choices if c.final is not None]))
