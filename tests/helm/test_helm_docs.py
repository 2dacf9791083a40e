"""The chart README's values table is generated from values.yaml and current."""

from __future__ import annotations

import subprocess
import sys

import yaml
from helm_chart_support import CHART, REPO


def test_values_table_is_current() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "chart-values-doc.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_top_level_value_is_documented() -> None:
    readme = (CHART / "README.md").read_text()
    for key in yaml.safe_load((CHART / "values.yaml").read_text()):
        assert f"| `{key}" in readme, f"values key {key} missing from the README table"
