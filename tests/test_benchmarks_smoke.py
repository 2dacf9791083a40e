"""Every benchmark runs in the suite in its --smoke mode (a few seconds each), so a broken one fails CI.

A benchmark is a script under benchmarks/ with a `__main__` block. Each is either listed in SMOKE
here (with a line its output must contain), or run by a smoke test of its own elsewhere under
tests/ (which names it as `benchmarks/<file>`), or listed in PENDING with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_smoke(script: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), "--smoke"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{script} --smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert SMOKE[script] in proc.stdout, f"{script} --smoke did not print {SMOKE[script]!r}:\n{proc.stdout[-3000:]}"
