"""What every API parser produces: one engine-bound OpenAI request plus what routing needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from supernode.api.requestlimits import MaxTokensError, resolve_max_tokens
from supernode.api.strictjson import StrictJSONError, loads_strict
from supernode.router.contracts import ApiKind
from supernode.router.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class ParsedRequest:
    api: ApiKind
    upstream_path: str  # "/v1/chat/completions" or "/v1/completions"
    body: dict[str, Any]  # the OpenAI body for the engine (model/mode fields fixed up later)
    mode_fields: dict[str, Any]  # the fields mode resolution reads (model, thinking, effort)
    stream: bool
    max_tokens: int | None  # resolved by the shared rule; None = not sent and no default given
    prompt_text: str  # rendered prompt, for prefix hashing and token estimates
    user: str | None = None
    include_usage: bool = False  # the client asked for a usage chunk (OpenAI stream_options)
    n: int = 1  # choices asked for (OpenAI `n`); each may generate max_tokens, so n * max_tokens are reserved
    extra: dict[str, Any] = field(default_factory=dict)


def load_json(raw: bytes) -> dict[str, Any]:
    """Bytes → a JSON object by the strict rules (no NaN/Infinity, lone surrogates, deep nesting or
    huge integers: supernode.api.strictjson), or InvalidRequest."""
    try:
        data = loads_strict(raw)
    except StrictJSONError as e:
        raise InvalidRequest(f"The request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"The request body must be a JSON object, got {type(data).__name__}")
    return data


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate with pydantic; the first error becomes an InvalidRequest naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"Invalid value for '{param}': {first['msg']}", param=param) from None


def max_tokens_of(max_tokens: int | None, max_completion_tokens: int | None, *, limit: int,
                  default: int | None) -> int | None:
    """The request's completion-token limit by the one shared rule (supernode.api.requestlimits)."""
    try:
        return resolve_max_tokens(max_tokens, max_completion_tokens, default=default, limit=limit)
    except MaxTokensError as e:
        raise InvalidRequest(str(e), param=e.param) from None


def content_text(content: Any) -> str:
    """Text of an OpenAI/Anthropic message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
