"""Ctrl-C drains (an in-flight stream finishes) and leaves no process behind. Runs last: it stops
the session's stack. Depends on: local runtime, router graceful shutdown."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any

import openai

from supernode.cli.local.procs import pid_alive


def _process_groups(pgids: set[int]) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, g in (line.split() for line in out.splitlines()) if int(g) in pgids]


def test_ctrl_c_drains_in_flight_then_leaves_no_process_behind(stack: Any) -> None:
    state = stack.state()
    pids = set(state.pids())
    family = set(_process_groups(pids)) | pids  # every process of every group (a rank's helpers too)
    assert len(family) >= 5

    result: dict[str, object] = {}

    def stream() -> None:
        try:
            chunks = list(stack.openai().chat.completions.create(
                model=stack.FLASH, messages=[{"role": "user", "content": "drain me"}], max_tokens=16, stream=True,
                extra_body={"thinking": {"type": "disabled"}, "ignore_eos": True}))
            result["finish"] = next((c.choices[0].finish_reason for c in chunks
                                     if c.choices and c.choices[0].finish_reason), None)
        except openai.APIError as exc:
            result["error"] = repr(exc)

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)  # in flight
    stack.proc.send_signal(signal.SIGINT)
    t.join(timeout=30)
    assert stack.proc.wait(timeout=60) == 0, stack.output()
    assert result.get("finish") in ("length", "stop"), f"in-flight stream during drain: {result}"
    survivors = [p for p in family if pid_alive(p)]
    assert survivors == [], f"left behind: {survivors}"
    assert "stopped" in stack.output()
