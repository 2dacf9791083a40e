"""`supernode up` autoscaling end to end, through the official OpenAI SDK: a flood of requests makes the
local decider start a second Flash group that then serves; once idle, the group drains and stops without
failing a request. Real engine ranks and the real router (its own stack, not the session one)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from upstack import UpLauncher, UpStack

from supernode.cli.local.secrets import engine_auth_headers

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
    behavior: {scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 1, coldStartSeconds: 10,
               readyTimeoutSeconds: 120}
"""


def served(url: str, state_dir: Path) -> float:
    try:  # engines answer only the router's token (this run's, in the state dir)
        text = httpx.get(f"{url}/metrics", headers=engine_auth_headers(state_dir), timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


@pytest.mark.slow
def test_flood_starts_a_second_group_that_serves_then_it_drains_without_failing_a_request(tmp_path: Path) -> None:
    with UpLauncher(tmp_path, UpStack).deployment(yaml.safe_load(SPEC)).run() as stack:
        flood_then_idle(stack)


def flood_then_idle(stack: UpStack) -> None:
    def phase(group: int) -> str:
        return next((g.phase for g in stack.state().groups if g.group == group), "")

    client = openai.OpenAI(base_url=stack.v1, api_key="none", max_retries=0, timeout=120)
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
        assert phase(1) == "Parked"
        group1 = next(g.url for g in stack.state().groups if g.group == 1)
        flooding.set()
        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        stack.wait_for("a second group started by the flood", lambda: phase(1) == "Ready", 120)
        stack.wait_for("the second group serving requests", lambda: served(group1, stack.state_dir) > 0, 60)
        flooding.clear()  # in-flight requests finish; then idleness drains the group
        for t in threads:
            t.join(120)
        stack.wait_for("the second group drained and stopped", lambda: phase(1) == "Parked", 60)
        assert not errors, errors
        assert done[0] > 0
        out = "\n".join(stack.lines)
        assert "flash: scale up 1 -> 2" in out and "flash/1: drained" in out, out
    finally:
        flooding.clear()
