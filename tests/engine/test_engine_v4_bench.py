"""benchmarks/engine_v4.py --smoke runs and prints every figure it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_v4.py"


def test_engine_v4_benchmark_smoke() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for needle in ("256k tokens: V4", "1024k tokens: V4", "V3/V4 =", "ratio engine@4 / transformers",
                   "cached prefix", "prompt tokens from cache"):  # fmt: skip
        assert needle in text, text
    assert "(0 prompt tokens from cache)" not in text
