"""Routing plugins come from one registry per kind; unknown names are rejected when the config is
parsed and when a profile is built, naming the kind and the known names."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from supernode.router.config import PickerConfig, RoutingConfig, ScorerConfig
from supernode.router.routing import plugins as P
from supernode.router.routing.profile import build_profile
from supernode.router.routing.registry import FILTERS, PICKERS, SCORERS, UnknownPlugin


@pytest.mark.parametrize(("doc", "kind"), [
    ({"filters": ["healthy", "fastest"]}, "filter"),
    ({"scorers": [{"name": "prefix"}, {"name": "vibes"}]}, "scorer"),
    ({"picker": {"name": "random"}}, "picker"),
])
def test_unknown_names_are_rejected_when_the_config_is_parsed(doc: dict[str, Any], kind: str) -> None:
    with pytest.raises(ValidationError, match=f"unknown routing {kind} .*; known: "):
        RoutingConfig.model_validate(doc)


@pytest.mark.parametrize("field", ["filters", "scorers", "picker"])
def test_unknown_names_are_rejected_when_a_profile_is_built(field: str) -> None:
    bad: dict[str, Any] = {
        "filters": ["healthy", "fastest"],
        "scorers": [ScorerConfig.model_construct(name="vibes", weight=1.0)],
        "picker": PickerConfig.model_construct(name="random", top_k=2),
    }
    config = RoutingConfig().model_copy(update={field: bad[field]})  # bypasses validation, as code could
    with pytest.raises(UnknownPlugin, match="known: "):
        build_profile(config)


def test_every_registered_name_builds_its_plugin() -> None:
    config = RoutingConfig.model_validate({
        "filters": list(FILTERS.names()),
        "scorers": [{"name": n, "weight": 1.0} for n in SCORERS.names()],
        "picker": {"name": "power-of-two", "top_k": 3},
    })
    profile = build_profile(config, seed=1)
    assert [f.name for f in profile.filters] == list(FILTERS.names())
    assert [s.name for s, _ in profile.scorers] == list(SCORERS.names())
    assert isinstance(profile.picker, P.PowerOfTwoPicker) and profile.picker.top_k == 3
    prefix = next(s for s, _ in profile.scorers if isinstance(s, P.PrefixScorer))
    assert prefix.index is profile.index  # plugins of one profile share its index and session map
    assert set(PICKERS.names()) == {"argmax", "power-of-two"}
