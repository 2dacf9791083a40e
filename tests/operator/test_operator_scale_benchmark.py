"""benchmarks/operator_scale.py keeps running: its smoke mode (10 deployments, a few seconds) is part of the suite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
Runs = tuple[subprocess.Popen[str], subprocess.Popen[str], Path]  # plain, --profile, the profile's file


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "operator_scale.py"), "--smoke", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Both smoke runs (plain, and with --profile) started at once: each mostly waits on its resync windows."""
    prof = tmp_path_factory.mktemp("profile") / "operator.prof"
    plain, profiled = _start(), _start("--profile", str(prof))
    yield plain, profiled, prof
    for proc in (plain, profiled):
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_operator_scale_benchmark_smoke(runs: Runs) -> None:
    code, out, err = _finish(runs[0])
    assert code == 0, out + err
    assert "children created for 10 in" in out
    for split in ("of which the test API server", "of which the operator", "no-op resync"):
        assert split in out, out


def test_operator_scale_profile_writes_the_bursts_stats(runs: Runs) -> None:
    """--profile runs the operator under benchmarks/profiled_child.py, on only during the burst."""
    import pstats

    code, out, err = _finish(runs[1])
    assert code == 0, out + err
    stats = pstats.Stats(str(runs[2]))
    assert any("supernode" in filename for filename, _, _ in stats.stats), "the operator's own code was profiled"  # type: ignore[attr-defined]
