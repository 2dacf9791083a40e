"""`supernode up` runs the autoscaling decision: a flood (router signals) starts a parked group, idleness
drains it (the endpoint file marks it draining first) and stops it; `supernode status` shows why."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supernode.cli.local.statefile import ENDPOINTS_FILE, load_state

SPEC = """
apiVersion: supernode.io/v1alpha1
kind: ModelDeployment
metadata: {name: flash}
spec:
  model: {name: flash-model, source: "builtin://tiny"}
  accelerator: {type: cpu}
  replicas: 1
  rollout: {drainTimeoutSeconds: 2}
  autoscaling:
    minReplicas: 1
    maxReplicas: 2
    behavior: {scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 1, coldStartSeconds: 1,
               readyTimeoutSeconds: 30}
"""

RUN = """
import sys
from supernode.cli.local.runtime import UpOptions, run_up
standin = sys.argv[1]
opts = UpOptions(files=[sys.argv[2]], port=int(sys.argv[3]), state_dir=sys.argv[4], autoscale_interval=0.2,
                 engine_cmd=[sys.executable, standin, "engine"], router_cmd=[sys.executable, standin, "router"])
sys.exit(run_up(opts, out=lambda line: print(line, flush=True)))
"""


def signals(path: Path, queued: int, in_flight: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pools": [{"model": "flash-model", "mode": "non-think", "queued": queued,
                                          "inFlight": in_flight, "queuedTokens": 0, "oldestWaitSeconds": 0}]}))
    tmp.replace(path)


def wait(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def phases(state_dir: Path) -> dict[str, str]:
    state = load_state(state_dir)
    return {f"{g.deployment}/{g.group}": g.phase for g in state.groups} if state else {}


def test_flood_starts_a_second_group_and_idleness_drains_and_stops_it(tmp_path: Path) -> None:
    (tmp_path / "flash.yaml").write_text(SPEC)
    (tmp_path / "s" / "checkpoints" / "tiny").mkdir(parents=True)  # no engine needed for stand-ins
    feed = tmp_path / "signals.json"
    signals(feed, 0, 2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    standin = str(Path(__file__).parent / "standins" / "standin.py")
    proc = subprocess.Popen([sys.executable, "-c", RUN, standin, "flash.yaml", str(port), "s"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "STANDIN_SIGNALS": str(feed)})
    state_dir = tmp_path / "s"
    try:
        wait(lambda: phases(state_dir) == {"flash/0": "Ready", "flash/1": "Parked"}, "one group, one parked")
        endpoints = json.loads((state_dir / ENDPOINTS_FILE).read_text())["endpoints"]
        assert [e["group"] for e in endpoints] == [0], "a parked group is not routed to"
        signals(feed, 40, 32)  # a flood
        wait(lambda: phases(state_dir).get("flash/1") == "Ready", "the second group serving")
        assert len(json.loads((state_dir / ENDPOINTS_FILE).read_text())["endpoints"]) == 2
        why = load_state(state_dir).autoscaling["flash"]  # type: ignore[union-attr]
        assert why["active"] == 2
        signals(feed, 0, 0)  # idle
        drained = wait(lambda: [e for e in json.loads((state_dir / ENDPOINTS_FILE).read_text())["endpoints"]
                                if e.get("draining")], "the group marked draining first")
        assert [e["group"] for e in drained] == [1]
        wait(lambda: phases(state_dir).get("flash/1") == "Parked", "the drained group stopped and parked")
        status = subprocess.run([sys.executable, "-m", "supernode.cli", "status", "--state-dir", "s"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
        assert "autoscaling flash: 1 groups" in status.stdout, status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "flash: scale up 1 -> 2" in out and "flash: scale down 2 -> 1" in out, out
    assert "flash/1: drained" in out, out
