"""Every benchmark runs in the suite in its --smoke mode (a few seconds each), so a broken one fails CI.

A benchmark is a script under benchmarks/ with a `__main__` block. Each is either listed in SMOKE
here (with a line its output must contain), or run by a smoke test of its own elsewhere under
tests/ (which names it as `benchmarks/<file>`), or listed in PENDING with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"

# script -> text its --smoke output must contain (the figure the benchmark exists to print)
SMOKE: dict[str, str] = {
    "planner_bench.py": "ratios (baseline / planner)",
    "router_overhead.py": "router overhead",
    "router_overload.py": "http throttle=off all",
    "router_routing_quality.py": "hit rate",
    "router_measured_capacity.py": "ratio measured / declared",
    "router_tokenize.py": "(fast alone)",
    "router_prepare_hashes.py": "decisions equal on every request",
    "engine_runner.py": "ratio runner batch",
    "engine_prefix_ttft.py": "faster with the prefix cache",
    "engine_throughput.py": "ratio engine@",
    "local_up.py": "cold start to serving",
    "device_fault.py": "(a) router stops routing to it",
}
# script -> why it is not run by any test yet (empty: every benchmark runs)
PENDING: dict[str, str] = {}


def _benchmarks() -> list[str]:
    return sorted(p.name for p in BENCH.glob("*.py") if 'if __name__ == "__main__"' in p.read_text())


def _run_elsewhere(name: str) -> bool:
    here = Path(__file__).resolve()
    return any(f"benchmarks/{name}" in p.read_text() for p in (REPO / "tests").rglob("test_*.py") if p != here)


def test_every_benchmark_has_a_smoke_run() -> None:
    missing = [b for b in _benchmarks() if b not in SMOKE and b not in PENDING and not _run_elsewhere(b)]
    assert not missing, f"benchmarks without a smoke test: {missing} (add --smoke and list them in SMOKE)"
    assert set(SMOKE) <= set(_benchmarks()), "SMOKE names a script that is not a benchmark"


# Smokes that mostly wait (timed load against fake engines, sleeps between phases: well under half a core
# each), started side by side when the first of them runs; their figures mean nothing in --smoke anyway.
SIDE_BY_SIDE = ("router_measured_capacity.py", "router_overload.py", "router_routing_quality.py")


def _start(script: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(BENCH / script), "--smoke"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def side_by_side() -> Iterator[dict[str, subprocess.Popen[str]]]:
    procs = {script: _start(script) for script in SIDE_BY_SIDE if script in SMOKE}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_smoke(script: str, request: pytest.FixtureRequest) -> None:
    started = request.getfixturevalue("side_by_side") if script in SIDE_BY_SIDE else {}
    proc = started.get(script) or _start(script)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"{script} --smoke failed:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert SMOKE[script] in stdout, f"{script} --smoke did not print {SMOKE[script]!r}:\n{stdout[-3000:]}"
