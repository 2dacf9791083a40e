"""How fast the local runtime starts, recovers and stops (the test suite runs one round: --smoke).

    python benchmarks/local_up.py [--rounds 3] [--smoke]

Runs `supernode up examples/local/pro.yaml examples/local/flash.yaml --tenants ...` in a temp state
dir and measures, from outside: cold start to "Serving." (checkpoint already cached after the first
round), kill -9 of a pro worker rank → pro/0 Ready again (gang restart incl. back-off), kill -9 of
the router → router Ready again, Ctrl-C → process exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPONENT_DIRS = ("crds", "kube", "httpserver", "operator", "engine", "router", "cli")  # as setup.py maps them
sys.path[:0] = [str(ROOT / d) for d in COMPONENT_DIRS]

from supernode.cli.local.statefile import load_state  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(cond: Callable[[], bool], timeout: float = 300) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.05)
    return time.monotonic() - t0


def one_round(state_dir: Path, *, smoke: bool = False) -> dict[str, float]:
    lines: list[str] = []
    ex = ROOT / "examples" / "local"
    files = [str(ex / "pro.yaml")] if smoke else [str(ex / "pro.yaml"), str(ex / "flash.yaml")]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "supernode.cli", "up", *files,
         "--tenants", str(ex / "tenants.yaml"), "--port", str(_port()), "--state-dir", str(state_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:len(COMPONENT_DIRS)])})
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    _until(lambda: any("Serving." in line for line in lines))
    out = {"cold start to serving (s)": time.monotonic() - t0}

    s = load_state(state_dir)
    assert s is not None
    pro = next(g for g in s.groups if g.deployment == "pro")
    t1 = time.monotonic()
    os.kill(pro.ranks[1].pid or 0, signal.SIGKILL)

    def pro_back() -> bool:
        st = load_state(state_dir)
        g = next(g for g in st.groups if g.deployment == "pro") if st else None
        return bool(g and g.restarts >= 1 and g.phase == "Ready")
    _until(pro_back)
    out["kill -9 rank -> group ready (s)"] = time.monotonic() - t1
    t2 = time.monotonic()
    os.kill(s.router_pid or 0, signal.SIGKILL)
    _until(lambda: bool((st := load_state(state_dir)) and st.router_restarts >= 1 and st.router_phase == "Ready"))
    out["kill -9 router -> router ready (s)"] = time.monotonic() - t2
    t3 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    out["ctrl-c -> all stopped (s)"] = time.monotonic() - t3
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="one round with pro only (the test suite runs it)")
    args = ap.parse_args()
    if args.smoke:
        args.rounds = 1
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for k, v in one_round(Path(tmp) / "state", smoke=args.smoke).items():  # round 0 creates the checkpoint
                results.setdefault(k, []).append(v)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in results.items()), flush=True)
    print(f"\n{'measure':40} {'median':>8} {'min':>8} {'max':>8}")
    for k, v in results.items():
        print(f"{k:40} {statistics.median(v):8.2f} {min(v):8.2f} {max(v):8.2f}")


if __name__ == "__main__":
    main()
