"""The reasoning-mode rule (supernode.api.modes): one table, and both callers reach it.

The router (`supernode.router.modes.resolve`) and the engine (its chat route) read a body's mode
through this module; the spy tests here and in tests/router + tests/engine prove they do not carry
copies of their own.
"""

from __future__ import annotations

from typing import Any

import pytest

from supernode.api import modes as M
from supernode.api.models import Mode
from supernode.router.config import ModelsConfig
from supernode.router.modes import resolve

NT, HI, MX = Mode.NON_THINK, Mode.THINK_HIGH, Mode.THINK_MAX

OPENAI: list[tuple[str, dict[str, Any], Mode | None]] = [
    ("no mode field", {}, None),
    ("thinking disabled", {"thinking": {"type": "disabled"}}, NT),
    ("thinking enabled", {"thinking": {"type": "enabled"}}, HI),
    ("thinking adaptive reads as enabled", {"thinking": {"type": "adaptive"}}, HI),
    ("effort max", {"reasoning_effort": "max"}, MX),
    ("effort is case-insensitive", {"reasoning_effort": "Max"}, MX),
    ("effort xhigh maps to max", {"reasoning_effort": "xhigh"}, MX),
    ("effort low maps to high", {"reasoning_effort": "low"}, HI),
    ("effort none turns thinking off", {"reasoning_effort": "none"}, NT),
    ("enabled plus effort max", {"thinking": {"type": "enabled"}, "reasoning_effort": "max"}, MX),
    ("disabled wins over an effort", {"thinking": {"type": "disabled"}, "reasoning_effort": "max"}, NT),
    ("template kwargs thinking off", {"chat_template_kwargs": {"thinking": False}}, NT),
    ("template kwargs thinking on", {"chat_template_kwargs": {"thinking": True}}, HI),
    ("template kwargs enable_thinking", {"chat_template_kwargs": {"enable_thinking": False}}, NT),
    ("template kwargs effort max", {"chat_template_kwargs": {"thinking": True, "reasoning_effort": "max"}}, MX),
    ("template kwargs beat body fields",
     {"chat_template_kwargs": {"thinking": False}, "thinking": {"type": "enabled"}}, NT),
    ("empty template kwargs fall back to body fields", {"chat_template_kwargs": {}, "reasoning_effort": "max"}, MX),
    ("output_config is not an OpenAI field", {"output_config": {"effort": "max"}}, None),
]

ANTHROPIC: list[tuple[str, dict[str, Any], Mode | None]] = [
    ("no mode field", {}, None),
    ("output_config effort max", {"output_config": {"effort": "max"}}, MX),
    ("thinking disabled", {"thinking": {"type": "disabled"}, "output_config": {"effort": "max"}}, NT),
    ("reasoning_effort is not an Anthropic field", {"reasoning_effort": "max"}, None),
    ("chat_template_kwargs is not an Anthropic field", {"chat_template_kwargs": {"thinking": False}}, None),
]


@pytest.mark.parametrize(("name", "body", "mode"), OPENAI, ids=[c[0] for c in OPENAI])
def test_openai_shape(name: str, body: dict[str, Any], mode: Mode | None) -> None:
    assert M.requested_mode(body) is mode
    assert M.resolve_mode(body, default=MX) is (mode or MX)


@pytest.mark.parametrize(("name", "body", "mode"), ANTHROPIC, ids=[c[0] for c in ANTHROPIC])
def test_anthropic_shape(name: str, body: dict[str, Any], mode: Mode | None) -> None:
    assert M.requested_mode(body, shape="anthropic") is mode


@pytest.mark.parametrize(("body", "shape", "param"), [
    ({"thinking": {"type": "sometimes"}}, "openai", "thinking.type"),
    ({"thinking": "on"}, "anthropic", "thinking.type"),
    ({"reasoning_effort": "extreme"}, "openai", "reasoning_effort"),
    ({"reasoning_effort": 3}, "openai", "reasoning_effort"),
    ({"chat_template_kwargs": {"thinking": "yes"}}, "openai", "chat_template_kwargs.thinking"),
    ({"chat_template_kwargs": []}, "openai", "chat_template_kwargs"),
    ({"chat_template_kwargs": {"reasoning_effort": "huge"}}, "openai", "chat_template_kwargs.reasoning_effort"),
    ({"output_config": "max"}, "anthropic", "output_config"),
    ({"output_config": {"effort": "huge"}}, "anthropic", "output_config.effort"),
])
def test_bad_values_name_the_field(body: dict[str, Any], shape: M.BodyShape, param: str) -> None:
    with pytest.raises(M.ModeFieldError) as e:
        M.requested_mode(body, shape=shape)
    assert e.value.param == param


@pytest.mark.parametrize("mode", list(Mode))
def test_template_kwargs_round_trip(mode: Mode) -> None:
    """What the router sends the engine reads back as the same mode."""
    assert M.requested_mode({"chat_template_kwargs": M.template_kwargs(mode)}) is mode


def test_router_resolution_goes_through_the_api_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = M.effort_mode

    def spy(effort: Any, param: str) -> Mode | None:
        seen.append(param)
        return real(effort, param)

    monkeypatch.setattr(M, "effort_mode", spy)
    cfg = ModelsConfig()
    cases = ((False, {"reasoning_effort": "max"}), (True, {"output_config": {"effort": "max"}}))
    for is_anthropic, body in cases:
        r = resolve({"model": "m", **body}, anthropic=is_anthropic, aliases=cfg.aliases, patterns={},
                    served=["m"], served_aliases={})
        assert r.mode is MX
    assert seen == ["reasoning_effort", "output_config.effort"]
