"""Fixtures for the chart tests: one loaded chart and cached renders (each render is a call into the
real Helm v4 library through helm-python-sdk, offline)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for helm_chart_support

from helm_chart_support import CHART, NAMESPACE, RELEASE, Objects, parse_manifests, with_auth_choice

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart")

Renderer = Callable[..., Objects]


@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: Any) -> Renderer:
    """render(values) -> objects; identical values are rendered once per session."""
    cache: dict[str, Objects] = {}

    def _render(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE) -> Objects:
        key = json.dumps([values, namespace], sort_keys=True)
        if key not in cache:
            cache[key] = parse_manifests(chart.render(with_auth_choice(values), name=RELEASE, namespace=namespace))
        return cache[key]

    return _render

