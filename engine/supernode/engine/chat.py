"""Reasoning budgets, and the reasoning/content split of the output.

The chat template itself is shared with the router (``supernode.api.chattemplate``); the mode of a
request is read by ``supernode.api.modes.resolve_mode`` (the rule the router applies too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supernode.api.models import Mode
from supernode.engine.tokenizer import IncrementalDecoder, Tokenizer
from supernode.engine.tool_calls import ToolCallDelta, ToolCallParser


@dataclass(frozen=True, slots=True)
class ReasoningBudgets:
    """Maximum reasoning tokens per mode before ``</think>`` is forced."""

    think_high: int = 1024
    think_max: int = 4096

    def for_mode(self, mode: Mode) -> int | None:
        return {Mode.THINK_HIGH: self.think_high, Mode.THINK_MAX: self.think_max}.get(mode)


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
