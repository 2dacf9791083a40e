"""`supernode up` autoscaling end to end, through the official OpenAI SDK: a flood of requests makes the
local decider start a second Flash group that then serves; once idle, the group drains and stops without
failing a request. Real engine ranks and the real router (its own stack, not the session one)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from supernode.cli.local.secrets import engine_auth_headers
from supernode.cli.local.statefile import load_state

SPEC = """
apiVersion: supernode.io/v1alpha1
kind: ModelDeployment
metadata: {name: flash}
spec:
  model: {name: deepseek-v4-flash, source: "builtin://tiny"}
  engine: {type: builtin, maxConcurrency: 2}
  accelerator: {type: cpu}
  replicas: 1
  modes: [non-think]
  rollout: {drainTimeoutSeconds: 60}
  autoscaling:
    minReplicas: 1
    maxReplicas: 2
    target: {queueDepthPerReplica: 1}
    behavior: {scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 3, coldStartSeconds: 10,
               readyTimeoutSeconds: 120}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served(url: str, state_dir: Path) -> float:
    try:  # engines answer only the router's token (this run's, in the state dir)
        text = httpx.get(f"{url}/metrics", headers=engine_auth_headers(state_dir), timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


@pytest.mark.slow
def test_flood_starts_a_second_group_that_serves_then_it_drains_without_failing_a_request(tmp_path: Path) -> None:
    (tmp_path / "flash.yaml").write_text(SPEC)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "supernode.cli", "up", "flash.yaml", "--port", str(port),
                             "--state-dir", "s"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    state_dir = tmp_path / "s"

    def wait(cond: object, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(cond) and cond():
                return
            assert proc.poll() is None, "".join(lines[-60:])
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{''.join(lines[-60:])}")

    def phase(group: int) -> str:
        state = load_state(state_dir)
        return next((g.phase for g in state.groups if g.group == group), "") if state else ""

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
    errors: list[BaseException] = []
    done = [0]
    flooding = threading.Event()

    def worker() -> None:
        while flooding.is_set():
            try:
                chunks = list(client.chat.completions.create(
                    model="deepseek-v4-flash", messages=[{"role": "user", "content": "count to twenty"}],
                    max_tokens=48, stream=True, extra_body={"thinking": {"type": "disabled"}}))
                assert chunks
                done[0] += 1
            except BaseException as exc:  # every request must succeed, during scale-up and drain
                errors.append(exc)
                return

    try:
        wait(lambda: any("Serving." in line for line in lines), "the stack serving", 240)
        assert phase(1) == "Parked"
        group1 = next(g.url for g in load_state(state_dir).groups if g.group == 1)  # type: ignore[union-attr]
        flooding.set()
        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        wait(lambda: phase(1) == "Ready", "a second group started by the flood", 120)
        wait(lambda: served(group1, state_dir) > 0, "the second group serving requests", 60)
        flooding.clear()  # in-flight requests finish; then idleness drains the group
        for t in threads:
            t.join(120)
        wait(lambda: phase(1) == "Parked", "the second group drained and stopped", 60)
        assert not errors, errors
        assert done[0] > 0
        out = "".join(lines)
        assert "flash: scale up 1 -> 2" in out and "flash/1: drained" in out, out
    finally:
        flooding.clear()
        proc.terminate()
        proc.wait(30)
