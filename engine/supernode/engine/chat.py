"""DeepSeek chat template, reasoning modes, and the reasoning/content split of the output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supernode.api.models import EFFORT_MODES, Mode
from supernode.engine import tokens as T
from supernode.engine.tokenizer import IncrementalDecoder, Piece, Tokenizer


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


def _effort_mode(effort: Any, param: str) -> Mode | None:
    if effort is None:
        return None
    if not isinstance(effort, str) or effort.lower() not in EFFORT_MODES:
        raise ChatError(f"{param}: must be one of {', '.join(EFFORT_MODES)}", param)
    return EFFORT_MODES[effort.lower()]


def resolve_mode(body: Mapping[str, Any], default: Mode = Mode.THINK_HIGH) -> Mode:
    """Mode from ``chat_template_kwargs`` (``thinking``, ``reasoning_effort``), else DeepSeek's body fields."""
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ChatError("chat_template_kwargs: must be an object", "chat_template_kwargs")
    thinking: Any = kwargs.get("thinking", kwargs.get("enable_thinking"))
    if thinking is not None and not isinstance(thinking, bool):
        raise ChatError("chat_template_kwargs.thinking: must be a boolean", "chat_template_kwargs.thinking")
    effort = _effort_mode(kwargs.get("reasoning_effort"), "chat_template_kwargs.reasoning_effort")
    if thinking is None and effort is None:
        field_ = body.get("thinking")
        if field_ is not None:
            kind = field_.get("type") if isinstance(field_, Mapping) else None
            if kind not in ("enabled", "disabled", "adaptive"):  # adaptive = enabled, as the router reads it
                raise ChatError("thinking.type: must be 'enabled', 'disabled' or 'adaptive'", "thinking.type")
            thinking = kind != "disabled"
        effort = _effort_mode(body.get("reasoning_effort"), "reasoning_effort")
    if thinking is False or effort is Mode.NON_THINK:
        return Mode.NON_THINK
    if effort is not None:
        return effort
    return Mode.THINK_HIGH if thinking else default


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


def render_chat_pieces(messages: Sequence[Any], mode: Mode) -> list[Piece]:
    """The DeepSeek prompt: BOS, system text, user/assistant turns, then the assistant opening for ``mode``.

    Only this template adds control tokens (``special`` pieces); message content is always a text piece,
    so a client writing ``<think>`` or ``<｜Assistant｜>`` sends text, never a control token.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ChatError("messages: must be a non-empty array", "messages")
    system: list[str] = [T.THINK_MAX_PREFIX] if mode is Mode.THINK_MAX else []
    turns: list[Piece] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatError(f"messages[{i}]: must be an object", f"messages[{i}]")
        role, text = m.get("role"), _content_text(m.get("content"), i)
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "tool"):
            turns += [Piece(T.USER, True), Piece(text)]
        elif role == "assistant":
            turns += [Piece(T.ASSISTANT, True), Piece(T.THINK_CLOSE, True), Piece(text), Piece(T.EOS, True)]
        else:
            raise ChatError(f"messages[{i}].role: unknown role {role!r}", f"messages[{i}].role")
    opening = T.THINK_CLOSE if mode is Mode.NON_THINK else T.THINK_OPEN
    return [Piece(T.BOS, True), Piece("\n\n".join(system)), *turns, Piece(T.ASSISTANT, True), Piece(opening, True)]


def render_chat(messages: Sequence[Any], mode: Mode) -> str:
    """The rendered prompt as one string (for display and tests; encode ``render_chat_pieces`` instead)."""
    return "".join(p.text for p in render_chat_pieces(messages, mode))


@dataclass(slots=True)
class Delta:
    reasoning: str = ""
    content: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content)


@dataclass(slots=True)
class OutputText:
    """Builds one request's output text: reasoning/content split at ``</think>``, stop strings, hold-back.

    ``push`` returns the text that may be sent now; ``stopped`` turns true when a stop string
    appeared in the content (the content is cut before it).
    """

    tokenizer: Tokenizer
    thinking: bool
    stop: tuple[str, ...] = ()
    reasoning: str = ""
    content: str = ""
    stopped: bool = False
    _in_reasoning: bool = field(init=False)
    _decoder: IncrementalDecoder = field(init=False)
    _sent_content: int = 0

    def __post_init__(self) -> None:
        self._in_reasoning = self.thinking
        self._decoder = IncrementalDecoder(self.tokenizer)

    def push(self, token_id: int) -> Delta:
        if self.stopped:
            return Delta()
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

    def finish(self) -> Delta:
        """Flush held-back text at the end of the request."""
        if self.stopped:
            return Delta(content=self._release(final=True))
        tail = self._decoder.flush()
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
