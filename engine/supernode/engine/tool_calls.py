"""Tool use in DeepSeek's format: render `tools` and tool turns into the prompt, parse generated calls.

The model writes calls with control tokens (see ``tokens.TOOL_*``)::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{"json": "arguments"}<｜tool▁call▁end｜>
        ... more calls ...<｜tool▁calls▁end｜>

Parsing works on token ids (control tokens decode to nothing), fed by ``chat.OutputText``, and yields
OpenAI-shaped increments: a call's first increment carries its id and name, later ones argument text.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supernode.engine import tokens as T


class ToolSpecError(ValueError):
    """Bad `tools` / `tool_choice` / tool-turn input; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


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


# --- request side -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """What the request allows: no tools, the model's choice, or a forced call (any, or one named)."""

    enabled: bool = True  # False: tool_choice "none" (tools are neither shown nor parsed)
    forced: bool = False  # "required" or a named function
    name: str | None = None  # the named function


def parse_tools(tools: Any) -> list[dict[str, Any]]:
    """Validated function specs ``{"name", "description", "parameters"}`` from an OpenAI `tools` array."""
    if not isinstance(tools, list) or not tools:
        raise ToolSpecError("tools: must be a non-empty array", "tools")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(tool.get("function"), Mapping)
        ):
            raise ToolSpecError(f"{where}: must be {{'type': 'function', 'function': {{...}}}}", where)
        fn = tool["function"]
        name = fn.get("name")
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ToolSpecError(
                f"{where}.function.name: must be a non-empty name without spaces", f"{where}.function.name"
            )
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, Mapping):
            raise ToolSpecError(
                f"{where}.function.parameters: must be a JSON schema object", f"{where}.function.parameters"
            )
        desc = fn.get("description") or ""
        if not isinstance(desc, str):
            raise ToolSpecError(f"{where}.function.description: must be a string", f"{where}.function.description")
        out.append({"name": name, "description": desc, "parameters": dict(params)})
    return out


def parse_tool_choice(choice: Any, names: Sequence[str]) -> ToolChoice:
    if choice is None or choice == "auto":
        return ToolChoice()
    if choice == "none":
        return ToolChoice(enabled=False)
    if choice == "required":
        return ToolChoice(forced=True)
    if isinstance(choice, Mapping) and choice.get("type") == "function" and isinstance(choice.get("function"), Mapping):
        name = choice["function"].get("name")
        if name not in names:
            raise ToolSpecError(f"tool_choice.function.name: {name!r} is not one of the tools", "tool_choice")
        return ToolChoice(forced=True, name=name)
    raise ToolSpecError("tool_choice: must be 'none', 'auto', 'required' or a named function", "tool_choice")


# A rendered prompt part: (text, is_control_token). Control tokens come only from these templates; names,
# arguments and results a client sends are always text (so they can never forge a control token).
Segment = tuple[str, bool]


def _ctl(token: str) -> Segment:
    return (token, True)


def text_of(segments: Sequence[Segment]) -> str:
    """The segments as one string (control tokens spelled out)."""
    return "".join(text for text, _ in segments)


def tools_system_text(specs: Sequence[Mapping[str, Any]]) -> list[Segment]:
    """The tool catalogue and the call format, appended to the system text."""
    fmt = [_ctl(T.TOOL_CALLS_BEGIN), _ctl(T.TOOL_CALL_BEGIN), ("NAME", False), _ctl(T.TOOL_SEP)]
    fmt += [("ARGUMENTS", False), _ctl(T.TOOL_CALL_END), _ctl(T.TOOL_CALLS_END)]
    lines = ["where ARGUMENTS is one JSON object; several calls go one after another inside the outer pair."]
    for spec in specs:
        lines += ["", f"### {spec['name']}"]
        if spec["description"]:
            lines.append(spec["description"])
        lines.append("Parameters: " + json.dumps(spec["parameters"], ensure_ascii=False, sort_keys=True))
    head = ("## Tools\n\nThese functions are available. To call one, answer with:\n", False)
    return [head, *fmt, ("\n" + "\n".join(lines), False)]


def render_calls(calls: Any, where: str) -> list[Segment]:
    """An assistant turn's `tool_calls` in the model's format (for the conversation history)."""
    if not isinstance(calls, list):
        raise ToolSpecError(f"{where}.tool_calls: must be an array", f"{where}.tool_calls")
    out = [_ctl(T.TOOL_CALLS_BEGIN)]
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ToolSpecError(f"{where}.tool_calls[{j}].function.name: required", f"{where}.tool_calls[{j}]")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        out += [_ctl(T.TOOL_CALL_BEGIN), (fn["name"], False), _ctl(T.TOOL_SEP), (args, False), _ctl(T.TOOL_CALL_END)]
    out.append(_ctl(T.TOOL_CALLS_END))
    return out


def render_outputs(outputs: Sequence[str]) -> list[Segment]:
    """Consecutive tool results, one block."""
    out = [_ctl(T.TOOL_OUTPUTS_BEGIN)]
    for text in outputs:
        out += [_ctl(T.TOOL_OUTPUT_BEGIN), (text, False), _ctl(T.TOOL_OUTPUT_END)]
    return [*out, _ctl(T.TOOL_OUTPUTS_END)]


def forced_prefix(choice: ToolChoice) -> list[Segment]:
    """What the assistant turn starts with when a call is forced (the model continues from there)."""
    if not choice.forced:
        return []
    head = [_ctl(T.TOOL_CALLS_BEGIN), _ctl(T.TOOL_CALL_BEGIN)]
    return head + ([(choice.name, False), _ctl(T.TOOL_SEP)] if choice.name else [])


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
