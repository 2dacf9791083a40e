"""Reasoning mode from a request body: the one rule the router and the engine both apply.

Fields read, in order of precedence:
- OpenAI shape: ``chat_template_kwargs`` (``thinking`` / ``enable_thinking`` as a boolean,
  ``reasoning_effort``) as vLLM and SGLang users send them; when it sets neither, DeepSeek's body
  fields ``thinking: {"type": ...}`` and ``reasoning_effort``.
- Anthropic shape: ``thinking: {"type": ...}`` and ``output_config.effort``.

``thinking.type`` is ``enabled``, ``adaptive`` (read as enabled) or ``disabled``. Effort values map
through ``EFFORT_MODES``; ``none`` turns thinking off. A disabled thinking flag wins over any effort;
an effort wins over an enabled flag; an enabled flag alone means think-high.

The router writes the resolved mode back as ``chat_template_kwargs`` (``template_kwargs``), which
the engine reads with the same function, so a mode survives the hop unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from supernode.api.models import EFFORT_MODES, Mode

BodyShape = Literal["openai", "anthropic"]
THINKING_TYPES = ("enabled", "disabled", "adaptive")
TEMPLATE_MODE_KEYS = ("thinking", "enable_thinking", "reasoning_effort")  # mode keys in chat_template_kwargs


class ModeFieldError(ValueError):
    """A mode field holds a value no rule accepts; ``param`` names the field (for a 400)."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def effort_mode(effort: Any, param: str) -> Mode | None:
    """The mode an effort value asks for; None when the field is absent."""
    if effort is None:
        return None
    if not isinstance(effort, str) or effort.lower() not in EFFORT_MODES:
        raise ModeFieldError(f"{param} must be one of {', '.join(EFFORT_MODES)}; got {effort!r}", param)
    return EFFORT_MODES[effort.lower()]


def _thinking_flag(body: Mapping[str, Any]) -> bool | None:
    """DeepSeek's ``thinking: {"type": ...}`` as a flag; None when absent."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    if kind not in THINKING_TYPES:
        raise ModeFieldError("thinking.type must be 'enabled', 'disabled' or 'adaptive'", "thinking.type")
    return kind != "disabled"


def _combine(thinking: bool | None, effort: Mode | None) -> Mode | None:
    if thinking is False:
        return Mode.NON_THINK
    if effort is not None:
        return effort
    return Mode.THINK_HIGH if thinking else None


def _template_fields(body: Mapping[str, Any]) -> tuple[bool | None, Mode | None]:
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        return None, None
    if not isinstance(kwargs, Mapping):
        raise ModeFieldError("chat_template_kwargs must be an object", "chat_template_kwargs")
    thinking: Any = kwargs.get("thinking", kwargs.get("enable_thinking"))  # TEMPLATE_MODE_KEYS
    if thinking is not None and not isinstance(thinking, bool):
        raise ModeFieldError("chat_template_kwargs.thinking must be a boolean", "chat_template_kwargs.thinking")
    return thinking, effort_mode(kwargs.get("reasoning_effort"), "chat_template_kwargs.reasoning_effort")


def requested_mode(body: Mapping[str, Any], *, shape: BodyShape = "openai") -> Mode | None:
    """The mode a request body explicitly asks for, or None when it sets no mode field."""
    if shape == "anthropic":
        oc = body.get("output_config")
        if oc is not None and not isinstance(oc, Mapping):
            raise ModeFieldError("output_config must be an object", "output_config")
        return _combine(_thinking_flag(body), effort_mode(oc.get("effort") if oc else None, "output_config.effort"))
    thinking, effort = _template_fields(body)
    if thinking is None and effort is None:
        thinking, effort = _thinking_flag(body), effort_mode(body.get("reasoning_effort"), "reasoning_effort")
    return _combine(thinking, effort)


def resolve_mode(body: Mapping[str, Any], *, shape: BodyShape = "openai", default: Mode = Mode.THINK_HIGH) -> Mode:
    """The mode a request runs in: what the body asks for, else ``default``."""
    return requested_mode(body, shape=shape) or default


def template_kwargs(mode: Mode) -> dict[str, Any]:
    """How a mode travels to vLLM / SGLang / the built-in engine: ``chat_template_kwargs``."""
    if mode is Mode.NON_THINK:
        return {"thinking": False}
    return {"thinking": True, "reasoning_effort": "max" if mode is Mode.THINK_MAX else "high"}
