"""The DeepSeek chat template: one implementation, rendered by the engine and by the router.

The engine encodes what this renders; the router renders and encodes the same way to get the prompt's
real token ids (prefix-cache block hashes, token counts). Change ``TEMPLATE_ID`` with any change to
the rendering: routers compare it with the engine's before trusting their own token ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernode.api import chattokens as T
from supernode.api.models import Mode
from supernode.api.prompttokens import Piece
from supernode.api.tooltemplate import (
    Segment,
    ToolChoice,
    ToolSpecError,
    forced_prefix,
    parse_tool_choice,
    parse_tools,
    render_calls,
    render_outputs,
    tools_system_text,
)

TEMPLATE_ID = "deepseek-v3.1-tools/1"  # the template and its version, as GET /v1/tokenizer reports it


class ChatError(ValueError):
    """Bad chat input; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A chat request rendered: the prompt's pieces, the validated tools and what the request allows."""

    pieces: list[Piece]
    tools: list[dict[str, Any]]
    choice: ToolChoice


def chat_prompt(messages: Any, tools: Any, tool_choice: Any, mode: Mode, *, tool_tokens: bool) -> ChatPrompt:
    """Render an OpenAI chat request's `messages`, `tools` and `tool_choice` for ``mode``.

    ``tool_tokens``: the tokenizer has the tool-call control tokens. Raises ``ChatError`` or
    ``ToolSpecError`` (both carry ``param``).
    """
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise ToolSpecError("tool_choice: needs tools", "tool_choice")
        specs, choice = [], ToolChoice(enabled=False)
    else:
        specs = parse_tools(tools)
        choice = parse_tool_choice(tool_choice, [s["name"] for s in specs])
        if choice.enabled and not tool_tokens:
            raise ToolSpecError("tools: this checkpoint's tokenizer has no tool-call tokens", "tools")
    return ChatPrompt(render_chat_pieces(messages, mode, specs, choice), specs, choice)


def _content_text(content: Any, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ChatError(f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise ChatError(f"messages[{i}].content: must be a string or a list of text parts", f"messages[{i}].content")


def render_chat_pieces(
    messages: Sequence[Any],
    mode: Mode,
    tools: Sequence[Mapping[str, Any]] = (),
    choice: ToolChoice | None = None,
) -> list[Piece]:
    """The DeepSeek prompt: BOS, system text (+ tool catalogue), turns, then the assistant opening for ``mode``.

    Only this template adds control tokens (``special`` pieces); message content is always a text piece,
    so a client writing ``<think>`` or ``<｜Assistant｜>`` sends text, never a control token.
    ``tools`` are validated specs (``tool_calls.parse_tools``); assistant turns may carry `tool_calls`,
    `tool` turns are rendered as tool outputs; a forced call (``choice``) pre-fills the call opening.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ChatError("messages: must be a non-empty array", "messages")
    choice = choice or ToolChoice()
    if choice.forced and mode is not Mode.NON_THINK:
        raise ChatError("tool_choice: forcing a tool call needs non-think mode (thinking disabled)", "tool_choice")
    system: list[str] = [T.THINK_MAX_PREFIX] if mode is Mode.THINK_MAX else []
    turns: list[Piece] = []
    outputs: list[str] = []  # consecutive tool results, rendered as one block
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatError(f"messages[{i}]: must be an object", f"messages[{i}]")
        role, text = m.get("role"), _content_text(m.get("content"), i)
        if role == "tool":
            outputs.append(text)
            continue
        if outputs:
            turns += _pieces(render_outputs(outputs))
            outputs = []
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            turns += [Piece(T.USER, True), Piece(text)]
        elif role == "assistant":
            calls = _pieces(render_calls(m["tool_calls"], f"messages[{i}]")) if m.get("tool_calls") else []
            turns += [Piece(T.ASSISTANT, True), Piece(T.THINK_CLOSE, True), Piece(text), *calls, Piece(T.EOS, True)]
        else:
            raise ChatError(f"messages[{i}].role: unknown role {role!r}", f"messages[{i}].role")
    if outputs:
        turns += _pieces(render_outputs(outputs))
    catalogue = _pieces(tools_system_text(tools)) if tools and choice.enabled else []
    if catalogue and system:
        catalogue.insert(0, Piece("\n\n"))
    opening = T.THINK_CLOSE if mode is Mode.NON_THINK else T.THINK_OPEN
    head = [Piece(T.BOS, True), Piece("\n\n".join(system)), *catalogue]
    return [*head, *turns, Piece(T.ASSISTANT, True), Piece(opening, True), *_pieces(forced_prefix(choice))]


def _pieces(segments: Sequence[Segment]) -> list[Piece]:
    return [Piece(text, control) for text, control in segments]


def render_chat(
    messages: Sequence[Any],
    mode: Mode,
    tools: Sequence[Mapping[str, Any]] = (),
    choice: ToolChoice | None = None,
) -> str:
    """The rendered prompt as one string (for display and tests; encode ``render_chat_pieces`` instead)."""
    return "".join(p.text for p in render_chat_pieces(messages, mode, tools, choice))
