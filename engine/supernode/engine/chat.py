"""DeepSeek chat template, reasoning budgets, and the reasoning/content split of the output.

The mode of a request is read by `supernode.api.modes.resolve_mode` (the rule the router applies too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supernode.api.models import Mode
from supernode.engine import tokens as T
from supernode.engine.tokenizer import IncrementalDecoder, Piece, Tokenizer
from supernode.engine.tool_calls import (
    Segment,
    ToolCallDelta,
    ToolCallParser,
    ToolChoice,
    forced_prefix,
    render_calls,
    render_outputs,
    tools_system_text,
)


class ChatError(ValueError):
    """Bad chat input; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class ReasoningBudgets:
    """Maximum reasoning tokens per mode before ``</think>`` is forced."""

    think_high: int = 1024
    think_max: int = 4096

    def for_mode(self, mode: Mode) -> int | None:
        return {Mode.THINK_HIGH: self.think_high, Mode.THINK_MAX: self.think_max}.get(mode)


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


@dataclass(slots=True)
class Delta:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)

    def __add__(self, other: Delta) -> Delta:
        return Delta(self.reasoning + other.reasoning, self.content + other.content, self.tool_calls + other.tool_calls)


@dataclass(slots=True)
class OutputText:
    """Builds one request's output text: reasoning/content split at ``</think>``, stop strings, hold-back.

    ``push`` returns the text that may be sent now; ``stopped`` turns true when a stop string
    appeared in the content (the content is cut before it).
    """

    tokenizer: Tokenizer
    thinking: bool
    stop: tuple[str, ...] = ()
    tools: ToolCallParser | None = None  # set when the request offers tools: calls leave the content channel
    reasoning: str = ""
    content: str = ""
    stopped: bool = False
    _in_reasoning: bool = field(init=False)
    _decoder: IncrementalDecoder = field(init=False)
    _sent_content: int = 0

    def __post_init__(self) -> None:
        self._in_reasoning = self.thinking
        self._decoder = IncrementalDecoder(self.tokenizer)

    @property
    def in_reasoning(self) -> bool:
        return self._in_reasoning

    def push(self, token_id: int) -> Delta:
        if self.stopped:
            return Delta()
        if self.tools is not None and not self._in_reasoning and self.tools.wants(token_id):
            return self._push_tool(token_id, self.tools)
        if self._in_reasoning:
            if token_id == self.tokenizer.think_close_id:
                self._in_reasoning = False
                text = self._decoder.flush()
                self._decoder = IncrementalDecoder(self.tokenizer)
                self.reasoning += text
                return Delta(reasoning=text)
            text = self._decoder.push(token_id)
            self.reasoning += text
            return Delta(reasoning=text)
        self.content += self._decoder.push(token_id)
        return Delta(content=self._release(final=False))

    def _push_tool(self, token_id: int, tools: ToolCallParser) -> Delta:
        """A token of a tool-calls block: control tokens steer the parser, text goes to the current call."""
        header = tools.pending_header()
        if token_id not in tools.ids.all:
            return Delta(tool_calls=header + tools.text(self._decoder.push(token_id)))
        tail = self._decoder.flush()
        if not tools.active:  # the block opens: content so far is complete (no stop-string hold-back)
            self.content += tail
            return Delta(content=self._release(final=True), tool_calls=header + tools.special(token_id))
        return Delta(tool_calls=header + tools.text(tail) + tools.special(token_id))

    def finish(self) -> Delta:
        """Flush held-back text at the end of the request."""
        if self.stopped:
            return Delta(content=self._release(final=True))
        tail = self._decoder.flush()
        if self.tools is not None and self.tools.active:
            return Delta(tool_calls=self.tools.pending_header() + self.tools.text(tail))
        if self._in_reasoning:
            self.reasoning += tail
            return Delta(reasoning=tail, content=self._release(final=True))
        self.content += tail
        return Delta(content=self._release(final=True))

    def _release(self, final: bool) -> str:
        for s in self.stop:
            at = self.content.find(s, max(0, self._sent_content - len(s) + 1))
            if at != -1:
                self.content = self.content[:at]
                self.stopped = final = True
        hold = 0 if final or not self.stop else max(len(s) for s in self.stop) - 1
        upto = max(self._sent_content, len(self.content) - hold)
        out = self.content[self._sent_content : upto]
        self._sent_content = upto
        return out
