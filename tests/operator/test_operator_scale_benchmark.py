"""benchmarks/operator_scale.py keeps running: its smoke mode (10 deployments, a few seconds) is part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_operator_scale_benchmark_smoke() -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "operator_scale.py"), "--smoke"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "children created for 10 in" in out.stdout
    for split in ("of which the test API server", "of which the operator", "no-op resync"):
        assert split in out.stdout, out.stdout
