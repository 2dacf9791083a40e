"""Model and reasoning-mode resolution (pure), with DeepSeek's semantics.

- `thinking: {"type": "enabled"|"disabled"}` in both API shapes; default enabled.
- Effort: OpenAI `reasoning_effort`, Anthropic `output_config.effort`. `none` turns thinking off;
  `minimal`/`low`/`medium`/`high` → high; `xhigh`/`max`/`ultra` → max.
- Aliases (`deepseek-chat` = flash non-think, `deepseek-reasoner` = flash think) imply a mode when
  the request names none; fnmatch patterns (`claude-opus*` → pro) map foreign model names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from supernode.api.models import EFFORT_MODES, Mode
from supernode.router.config import AliasTarget


class ModeError(ValueError):
    """Invalid mode fields; ``param`` names the offending field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class UnknownModel(LookupError):
    def __init__(self, model: str):
        super().__init__(f"The model `{model}` does not exist or is not served here")
        self.model = model


def _effort_mode(effort: Any, param: str) -> Mode | None:
    """The mode an effort value asks for (the shared EFFORT_MODES table); None when absent."""
    if effort is None:
        return None
    if not isinstance(effort, str) or effort.lower() not in EFFORT_MODES:
        raise ModeError(f"{param} must be one of {', '.join(EFFORT_MODES)}; got {effort!r}", param)
    return EFFORT_MODES[effort.lower()]


def requested_mode(body: Mapping[str, Any], *, anthropic: bool) -> Mode | None:
    """The mode a request body explicitly asks for, or None when it sets no mode field."""
    thinking = body.get("thinking")
    thinking_type: str | None = None
    if thinking is not None:
        if not isinstance(thinking, Mapping) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
            raise ModeError("thinking.type must be 'enabled' or 'disabled'", "thinking.type")
        thinking_type = str(thinking["type"])
    if anthropic:
        oc = body.get("output_config")
        if oc is not None and not isinstance(oc, Mapping):
            raise ModeError("output_config must be an object", "output_config")
        effort = _effort_mode(oc.get("effort") if oc else None, "output_config.effort")
    else:
        effort = _effort_mode(body.get("reasoning_effort"), "reasoning_effort")
    if thinking_type == "disabled":
        return Mode.NON_THINK
    if effort is not None:
        return effort
    if thinking_type in ("enabled", "adaptive"):
        return Mode.THINK_HIGH
    return None


@dataclass(frozen=True, slots=True)
class Resolved:
    model: str  # canonical served model name
    mode: Mode


def resolve_model(
    name: str,
    *,
    aliases: Mapping[str, AliasTarget],
    patterns: Mapping[str, str],
    served: Iterable[str],
    served_aliases: Mapping[str, str],
) -> tuple[str, Mode | None]:
    """Map a client's model name to (canonical model, mode implied by an alias or None)."""
    served_set = set(served)
    if name in served_set:
        return name, None
    if name in aliases:
        target = aliases[name]
        return target.model, target.mode
    if name in served_aliases:
        return served_aliases[name], None
    for pattern, model in patterns.items():
        if fnmatch.fnmatchcase(name, pattern):
            return model, None
    raise UnknownModel(name)


def resolve(
    body: Mapping[str, Any],
    *,
    anthropic: bool,
    aliases: Mapping[str, AliasTarget],
    patterns: Mapping[str, str],
    served: Iterable[str],
    served_aliases: Mapping[str, str],
    default_mode: Mode = Mode.THINK_HIGH,
) -> Resolved:
    """Resolve model and mode: explicit request fields > alias-implied mode > default."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ModeError("model is required and must be a string", "model")
    model, alias_mode = resolve_model(
        name, aliases=aliases, patterns=patterns, served=served, served_aliases=served_aliases
    )
    explicit = requested_mode(body, anthropic=anthropic)
    return Resolved(model=model, mode=explicit or alias_mode or default_mode)


def template_kwargs(mode: Mode) -> dict[str, Any]:
    """How a mode reaches vLLM / SGLang / the built-in engine: `chat_template_kwargs`."""
    if mode is Mode.NON_THINK:
        return {"thinking": False}
    return {"thinking": True, "reasoning_effort": "max" if mode is Mode.THINK_MAX else "high"}
