"""benchmarks/router_shared_state.py runs (smoke mode) against the real Redis/PostgreSQL and meets the
exactness targets (latency targets are printed, not asserted: the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shared_services import PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT, require

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke() -> None:
    require("Redis", REDIS_HOST, REDIS_PORT)
    require("PostgreSQL", PG_HOST, PG_PORT)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "router_shared_state.py"), "--smoke", "--json"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["targets"]["overshoot_le_2pct"] and r["targets"]["zero_rows_lost_or_duplicated"], r
    assert r["burst"]["admitted"] >= r["burst"]["rpm"]
    for key in ("admission_1_replica", "admission_3_replicas"):
        assert r[key]["redis"]["admissions_per_s_per_replica"] > 0 and r[key]["local"]["p50_ms"] > 0
