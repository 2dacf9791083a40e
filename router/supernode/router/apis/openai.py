"""OpenAI Chat Completions and Completions request parsers (pure)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from supernode.api.requestlimits import MAX_CHOICES
from supernode.router.apis.common import ParsedRequest, content_text, max_tokens_of, validate
from supernode.router.errors import InvalidRequest

MODE_FIELDS = ("model", "thinking", "reasoning_effort", "chat_template_kwargs")  # read by supernode.api.modes


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[dict[str, Any]] | None = None


class StreamOptions(_Open):
    include_usage: StrictBool = False


class ChatRequest(_Open):
    model: StrictStr = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    n: StrictInt | None = Field(default=None, ge=1, le=MAX_CHOICES)
    user: StrictStr | None = None


class CompletionRequest(_Open):
    model: StrictStr = Field(min_length=1)
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    n: StrictInt | None = Field(default=None, ge=1, le=MAX_CHOICES)
    user: StrictStr | None = None


def render_chat(messages: list[dict[str, Any]]) -> str:
    """A stable text rendering of a conversation for prefix hashing (not the engine's template)."""
    return "".join(f"<|{m.get('role', '')}|>{content_text(m.get('content'))}\n" for m in messages)


def _mode_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in MODE_FIELDS if k in body}


def _strip_mode(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("thinking", "reasoning_effort")}


def parse_chat(body: dict[str, Any], *, max_tokens_limit: int, default_max_tokens: int | None = None) -> ParsedRequest:
    req = validate(ChatRequest, body)
    max_tokens = max_tokens_of(req.max_tokens, req.max_completion_tokens, limit=max_tokens_limit,
                               default=default_max_tokens)
    return ParsedRequest(
        api="openai-chat",
        upstream_path="/v1/chat/completions",
        body=_strip_mode(body),
        mode_fields=_mode_fields(body),
        stream=req.stream,
        max_tokens=max_tokens,
        prompt_text=render_chat(body["messages"]),
        user=req.user,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        n=req.n or 1,
    )


def parse_completion(body: dict[str, Any], *, max_tokens_limit: int,
                     default_max_tokens: int | None = None) -> ParsedRequest:
    req = validate(CompletionRequest, body)
    max_tokens = max_tokens_of(req.max_tokens, None, limit=max_tokens_limit, default=default_max_tokens)
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        if len(prompt) != 1:
            raise InvalidRequest("Only one prompt per request is supported", param="prompt")
        prompt = prompt[0]
    text = prompt if isinstance(prompt, str) else " ".join(str(t) for t in prompt)  # type: ignore[union-attr]
    return ParsedRequest(
        api="openai-completions",
        upstream_path="/v1/completions",
        body=_strip_mode(body),
        mode_fields=_mode_fields(body),
        stream=req.stream,
        max_tokens=max_tokens,
        prompt_text=text,
        user=req.user,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        n=req.n or 1,
        extra={"token_id_prompt": True} if isinstance(prompt, list) else {},
    )
