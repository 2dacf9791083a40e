"""Tool use in DeepSeek's format, output side: parse the calls the model generates.

The request side (validating `tools`, rendering them into the prompt) is the shared chat template's,
``supernode.api.tooltemplate``. Parsing works on token ids (control tokens decode to nothing), fed by
``chat.OutputText``, and yields OpenAI-shaped increments: a call's first increment carries its id and
name, later ones argument text.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

from supernode.api import chattokens as T
from supernode.api.tooltemplate import ToolChoice


@dataclass(frozen=True, slots=True)
class ToolTokens:
    """The control-token ids the parser reacts to."""

    calls_begin: int
    calls_end: int
    call_begin: int
    call_end: int
    sep: int

    @classmethod
    def resolve(cls, token_id: Any) -> ToolTokens | None:
        """From a ``token -> id | None`` lookup (``Tokenizer.token_id``); None when the vocabulary lacks any."""
        names = (T.TOOL_CALLS_BEGIN, T.TOOL_CALLS_END, T.TOOL_CALL_BEGIN, T.TOOL_CALL_END, T.TOOL_SEP)
        ids = [token_id(n) for n in names]
        return None if any(i is None for i in ids) else cls(*ids)

    @property
    def all(self) -> frozenset[int]:
        return frozenset((self.calls_begin, self.calls_end, self.call_begin, self.call_end, self.sep))


# --- output side --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One increment of one call: the first of a call has ``id`` and ``name``; later ones add ``arguments``."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None

    def openai(self) -> dict[str, Any]:
        fn: dict[str, Any] = {"arguments": self.arguments}
        out: dict[str, Any] = {"index": self.index, "function": fn}
        if self.id is not None:
            out.update(id=self.id, type="function")
            fn["name"] = self.name
        return out


class _State(enum.Enum):
    OUTSIDE = "outside"  # ordinary content
    BETWEEN = "between"  # inside the calls block, between calls
    NAME = "name"  # reading a call's name
    ARGS = "args"  # reading a call's arguments


@dataclass(slots=True)
class ToolCallParser:
    """Consumes the content channel's tokens once a calls block opens; yields ToolCallDelta increments."""

    ids: ToolTokens
    single: bool = False  # parallel_tool_calls=false: only the first call is kept
    forced: ToolChoice = field(default_factory=ToolChoice)
    num_calls: int = 0
    _state: _State = _State.OUTSIDE
    _name: str = ""

    def __post_init__(self) -> None:
        if self.forced.forced:  # the prompt already holds the block opening (``forced_prefix``)
            self._state = _State.NAME
            self._name = self.forced.name or ""

    @property
    def active(self) -> bool:
        """True while inside a calls block (text belongs to calls, not to content)."""
        return self._state is not _State.OUTSIDE

    def wants(self, token_id: int) -> bool:
        return self.active or token_id in self.ids.all

    def pending_header(self) -> list[ToolCallDelta]:
        """A named forced call is known before any token: announce it first."""
        if self.forced.name and self._state is _State.NAME and self.num_calls == 0:
            return self._open_call()
        return []

    def special(self, token_id: int) -> list[ToolCallDelta]:
        ids, state = self.ids, self._state
        if token_id == ids.calls_begin:
            self._state = _State.BETWEEN
        elif token_id == ids.call_begin:
            self._state, self._name = _State.NAME, ""
        elif token_id == ids.sep and state is _State.NAME:
            return self._open_call()
        elif token_id == ids.call_end and state in (_State.NAME, _State.ARGS):
            out = self._open_call() if state is _State.NAME and self._name.strip() else []
            self._state = _State.BETWEEN
            return out
        elif token_id == ids.calls_end:
            self._state = _State.OUTSIDE
        return []

    def text(self, text: str) -> list[ToolCallDelta]:
        if not text:
            return []
        if self._state is _State.NAME:
            self._name += text
        elif self._state is _State.ARGS and self._keeps(self.num_calls - 1):
            return [ToolCallDelta(self.num_calls - 1, text)]
        return []  # between calls: separators only

    def _open_call(self) -> list[ToolCallDelta]:
        index = self.num_calls
        self.num_calls += 1
        self._state = _State.ARGS
        if not self._keeps(index):
            return []
        return [ToolCallDelta(index, "", id=f"call_{uuid.uuid4().hex[:24]}", name=self._name.strip())]

    def _keeps(self, index: int) -> bool:
        return not self.single or index == 0
