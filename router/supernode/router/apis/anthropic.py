"""Anthropic Messages → the engines' OpenAI chat API (pure)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from supernode.router.apis.common import ParsedRequest, content_text, max_tokens_of, validate
from supernode.router.apis.openai import render_chat
from supernode.router.errors import InvalidRequest


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Block(_Open):
    type: StrictStr


class Message(_Open):
    role: Literal["user", "assistant"]
    content: StrictStr | list[Block]


class Metadata(_Open):
    user_id: StrictStr | None = None


class Tool(_Open):
    name: StrictStr = Field(min_length=1)
    description: StrictStr | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class MessagesRequest(_Open):
    model: StrictStr = Field(min_length=1)
    max_tokens: StrictInt = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: StrictStr | list[Block] | None = None
    stop_sequences: list[StrictStr] | None = None
    stream: StrictBool = False
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=1)
    top_k: StrictInt | None = Field(default=None, ge=0)
    metadata: Metadata | None = None
    tools: list[Tool] | None = None
    tool_choice: dict[str, Any] | None = None


def _blocks(content: str | list[Block]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b.model_dump() for b in content]


def _tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    return content_text(content) if not isinstance(content, str) else content


def _user_messages(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    for i, b in enumerate(blocks):
        kind = b["type"]
        if kind == "text":
            texts.append(str(b.get("text", "")))
        elif kind == "tool_result":
            if not isinstance(b.get("tool_use_id"), str):
                raise InvalidRequest("tool_result.tool_use_id is required", param=f"{where}.content.{i}.tool_use_id")
            out.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": _tool_result_text(b)})
        else:
            raise InvalidRequest(f"content block type {kind!r} is not supported in user turns",
                                 param=f"{where}.content.{i}.type")
    if texts:
        out.append({"role": "user", "content": "".join(texts)})
    return out


def _assistant_message(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, b in enumerate(blocks):
        kind = b["type"]
        if kind == "text":
            text.append(str(b.get("text", "")))
        elif kind == "thinking":
            reasoning.append(str(b.get("thinking", "")))
        elif kind == "redacted_thinking":
            continue
        elif kind == "tool_use":
            if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                raise InvalidRequest("tool_use blocks need id and name", param=f"{where}.content.{i}")
            args = json.dumps(b.get("input", {}))
            calls.append({"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": args}})
        else:
            raise InvalidRequest(f"content block type {kind!r} is not supported in assistant turns",
                                 param=f"{where}.content.{i}.type")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if reasoning:
        msg["reasoning_content"] = "".join(reasoning)
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("tool_choice.type must be auto, any, tool (with name) or none", param="tool_choice")


def to_openai_messages(req: MessagesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else content_text([b.model_dump() for b in req.system])
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        blocks = _blocks(m.content)
        where = f"messages.{i}"
        if m.role == "user":
            messages.extend(_user_messages(blocks, where))
        else:
            messages.append(_assistant_message(blocks, where))
    return messages


def parse_messages(body: dict[str, Any], *, max_tokens_limit: int,
                   default_max_tokens: int | None = None) -> ParsedRequest:
    req = validate(MessagesRequest, body)
    max_tokens_of(req.max_tokens, None, limit=max_tokens_limit, default=None)  # required here: no default
    messages = to_openai_messages(req)
    out: dict[str, Any] = {"model": req.model, "messages": messages, "max_tokens": req.max_tokens,
                           "stream": req.stream}
    for name in ("temperature", "top_p", "top_k"):
        if getattr(req, name) is not None:
            out[name] = getattr(req, name)
    if req.stop_sequences:
        out["stop"] = req.stop_sequences
    user = req.metadata.user_id if req.metadata else None
    if user:
        out["user"] = user
    if req.tools:
        out["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                          "parameters": t.input_schema}} for t in req.tools]
    if req.tool_choice:
        out["tool_choice"] = _tool_choice(req.tool_choice)
    mode_fields: dict[str, Any] = {k: body[k] for k in ("model", "thinking", "output_config") if k in body}
    return ParsedRequest(
        api="anthropic-messages",
        upstream_path="/v1/chat/completions",
        body=out,
        mode_fields=mode_fields,
        stream=req.stream,
        max_tokens=req.max_tokens,
        prompt_text=render_chat(messages),
        user=user,
        include_usage=True,
    )
