"""DeepSeek's tool-use format, request side: validate `tools` / `tool_choice` and render tools, calls and
tool results into the prompt (the chat template's part; shared by the engine and the router).

A call is written with control tokens (``chattokens.TOOL_*``)::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{"json": "arguments"}<｜tool▁call▁end｜>
        ... more calls ...<｜tool▁calls▁end｜>

Parsing generated calls is the engine's business (``supernode.engine.tool_calls``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernode.api import chattokens as T


class ToolSpecError(ValueError):
    """Bad `tools` / `tool_choice` / tool-turn input; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


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
