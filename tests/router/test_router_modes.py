"""Mode and model resolution: table tests with DeepSeek's semantics."""

from __future__ import annotations

from typing import Any

import pytest

from supernode.api.models import Mode
from supernode.api.modes import ModeFieldError as ModeError
from supernode.router.config import ModelsConfig
from supernode.router.modes import UnknownModel, resolve

FLASH, PRO = "deepseek-v4-flash", "deepseek-v4-pro"
CFG = ModelsConfig()
NT, HI, MX = Mode.NON_THINK, Mode.THINK_HIGH, Mode.THINK_MAX


def run(body: dict[str, Any], *, anthropic: bool = False) -> tuple[str, Mode]:
    r = resolve(body, anthropic=anthropic, aliases=CFG.aliases, patterns=CFG.patterns, served=[FLASH, PRO],
                served_aliases={"flash-legacy": FLASH}, default_mode=CFG.default_mode)
    return r.model, r.mode


CASES: list[tuple[str, dict[str, Any], bool, tuple[str, Mode]]] = [
    ("default is thinking, effort high", {"model": FLASH}, False, (FLASH, HI)),
    ("thinking disabled is non-think", {"model": FLASH, "thinking": {"type": "disabled"}}, False, (FLASH, NT)),
    ("thinking enabled is think-high", {"model": PRO, "thinking": {"type": "enabled"}}, False, (PRO, HI)),
    ("reasoning_effort max", {"model": PRO, "reasoning_effort": "max"}, False, (PRO, MX)),
    ("reasoning_effort xhigh maps to max", {"model": PRO, "reasoning_effort": "xhigh"}, False, (PRO, MX)),
    ("reasoning_effort ultra maps to max", {"model": PRO, "reasoning_effort": "ultra"}, False, (PRO, MX)),
    ("reasoning_effort low maps to high", {"model": PRO, "reasoning_effort": "low"}, False, (PRO, HI)),
    ("reasoning_effort medium maps to high", {"model": PRO, "reasoning_effort": "medium"}, False, (PRO, HI)),
    ("reasoning_effort minimal maps to high", {"model": PRO, "reasoning_effort": "minimal"}, False, (PRO, HI)),
    ("reasoning_effort none turns thinking off", {"model": PRO, "reasoning_effort": "none"}, False, (PRO, NT)),
    ("disabled wins over an effort", {"model": PRO, "thinking": {"type": "disabled"}, "reasoning_effort": "max"},
     False, (PRO, NT)),
    ("deepseek-chat is flash non-think", {"model": "deepseek-chat"}, False, (FLASH, NT)),
    ("deepseek-reasoner is flash think", {"model": "deepseek-reasoner"}, False, (FLASH, HI)),
    ("explicit fields beat an alias mode", {"model": "deepseek-chat", "reasoning_effort": "max"}, False, (FLASH, MX)),
    ("endpoint-announced alias", {"model": "flash-legacy"}, False, (FLASH, HI)),
    ("claude-opus maps to pro", {"model": "claude-opus-4-1"}, True, (PRO, HI)),
    ("claude-sonnet maps to flash", {"model": "claude-sonnet-4-6"}, True, (FLASH, HI)),
    ("claude-haiku maps to flash", {"model": "claude-haiku-4-5", "thinking": {"type": "disabled"}}, True,
     (FLASH, NT)),
    ("anthropic output_config.effort max", {"model": PRO, "output_config": {"effort": "max"}}, True, (PRO, MX)),
    ("anthropic ignores OpenAI reasoning_effort", {"model": PRO, "reasoning_effort": "max"}, True, (PRO, HI)),
    ("openai ignores output_config", {"model": PRO, "output_config": {"effort": "max"}}, False, (PRO, HI)),
]


@pytest.mark.parametrize(("name", "body", "anthropic", "expected"), CASES, ids=[c[0] for c in CASES])
def test_resolution(name: str, body: dict[str, Any], anthropic: bool, expected: tuple[str, Mode]) -> None:
    assert run(body, anthropic=anthropic) == expected


@pytest.mark.parametrize(("body", "param"), [
    ({"model": FLASH, "thinking": {"type": "maybe"}}, "thinking.type"),
    ({"model": FLASH, "thinking": "on"}, "thinking.type"),
    ({"model": FLASH, "reasoning_effort": "huge"}, "reasoning_effort"),
    ({"model": FLASH, "reasoning_effort": 3}, "reasoning_effort"),
    ({"model": 7}, "model"),
])
def test_invalid_mode_fields_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ModeError) as e:
        run(body)
    assert e.value.param == param


def test_output_config_must_be_an_object() -> None:
    with pytest.raises(ModeError):
        run({"model": FLASH, "output_config": "max"}, anthropic=True)


def test_unknown_model() -> None:
    with pytest.raises(UnknownModel):
        run({"model": "gpt-4o"})

