"""`supernode router` never starts without authentication by accident (issue 10)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def run_router(tmp_path: Path, admission: dict[str, object]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "endpoints.json").write_text('{"endpoints": []}')
    config = {"discovery": {"type": "static", "path": "endpoints.json"}, "admission": admission,
              "server": {"port": 9, "metrics_port": None}}
    (tmp_path / "router.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "supernode.cli", "router", "--config", str(tmp_path / "router.yaml")],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_tenants_file_stops_the_router(tmp_path: Path) -> None:
    out = run_router(tmp_path, {"tenantsFile": "absent.yaml"})
    assert out.returncode == 2 and "absent.yaml" in out.stderr and "missing" in out.stderr


def test_an_admission_section_without_tenants_or_anonymous_is_invalid(tmp_path: Path) -> None:
    out = run_router(tmp_path, {})
    assert out.returncode == 2 and "anonymous: true" in out.stderr


def test_a_config_that_does_not_mention_admission_is_invalid(tmp_path: Path) -> None:
    import pytest

    from supernode.router.config import parse_config

    with pytest.raises(ValueError, match="authenticate"):
        parse_config({"discovery": {"type": "static", "path": "e.json"}})
    assert parse_config({"discovery": {"type": "static", "path": "e.json"}, "admission": None}).admission is None
