"""The autoscaling simulation's smoke mode runs (seconds) and the builtin decider behaves in it:
no reversals, queue-wait SLO held, fewer group-hours than static provisioning at peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_autoscaling_sim_smoke() -> None:
    """The smoke run of benchmarks/autoscaling_sim.py (tests/test_benchmarks_smoke.py looks for this path)."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "autoscaling_sim.py"), "--smoke", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout)
    rows = {row["policy"]: row for row in report["rows"]}
    assert set(rows) == {"static-peak", "static-min", "threshold", "builtin"}
    builtin, static = rows["builtin"], rows["static-peak"]
    assert static["events"] == 0 and builtin["events"] > 0
    assert builtin["reversals"] == 0
    assert builtin["sloMinutesPct"] <= 1.0
    assert builtin["groupHours"] < static["groupHours"]
    assert report["targets"]["zeroReversals"] is True


def test_tight_pool_preempts_flash_for_pro() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "autoscaling_sim.py"), "--hours", "16",
                          "--pool", "12", "--json"], capture_output=True, text=True, timeout=120, check=True)
    builtin = next(r for r in json.loads(out.stdout)["rows"] if r["policy"] == "builtin")
    pro, flash = builtin["deployments"]["v4-pro"], builtin["deployments"]["v4-flash"]
    assert pro["preemptions"] >= 1 and flash["preemptions"] == 0
    assert pro["sloMinutes"] <= flash["sloMinutes"]
