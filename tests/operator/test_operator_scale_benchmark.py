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


def test_operator_scale_profile_writes_the_bursts_stats(tmp_path: Path) -> None:
    """--profile runs the operator under benchmarks/profiled_child.py, on only during the burst."""
    import pstats

    out = tmp_path / "operator.prof"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "operator_scale.py"), "--smoke", "--profile",
                          str(out)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    stats = pstats.Stats(str(out))
    assert any("supernode" in filename for filename, _, _ in stats.stats), "the operator's own code was profiled"  # type: ignore[attr-defined]
