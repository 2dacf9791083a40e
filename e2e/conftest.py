"""One `supernode up` on examples/local for the whole e2e session (real engine ranks over gloo, the
real router, the real tenants file), driven through the official OpenAI and Anthropic SDKs.

Needs: engine (`engine serve`, `init-checkpoint`), router (`router --config`, local discovery,
OpenAI + Anthropic APIs), admission + metering, planner. A missing part fails the session fixture
(and so every test) with the `supernode up` output — nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from supernode.cli.local.statefile import LocalState, load_state

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "local"
START_TIMEOUT = 240.0


@dataclass
class Stack:
    """The running stack; tests reach keys and model names through it (e2e files import nothing
    from each other)."""

    ACME_KEY = "sk-local-acme-premium-0001"  # premium tier (examples/local/tenants.yaml)
    HOBBY_KEY = "sk-local-hobby-free-0002"  # free tier, rpm 12
    PRO = "deepseek-v4-pro"
    FLASH = "deepseek-v4-flash"

    url: str
    state_dir: Path
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    @property
    def admin_key(self) -> str:
        """`supernode up` generated it into the state dir (0600) and printed only the path."""
        return (self.state_dir / "admin.key").read_text().strip()

    def state(self) -> LocalState:
        state = load_state(self.state_dir)
        assert state is not None, "state.json missing"
        return state

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def wait_for(self, what: str, cond: object, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(cond) and cond():
                return
            assert self.proc.poll() is None, f"supernode up exited while waiting for {what}:\n{self.output()}"
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")

    def openai(self, key: str | None = None, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key=key or self.ACME_KEY, max_retries=0, timeout=60, **kw)

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key or self.ACME_KEY, max_retries=0, timeout=60)

    def usage_rows(self, tenant: str) -> list[dict[str, object]]:
        r = httpx.get(f"{self.url}/admin/usage", params={"tenant": tenant, "view": "rows"},
                      headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10)
        assert r.status_code == 200, r.text
        return list(r.json()["rows"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pump(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("supernode-state")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "SUPERNODE_ADMIN_KEY"}  # up generates one (admin.key)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "supernode.cli", "up", str(EXAMPLES / "pro.yaml"), str(EXAMPLES / "flash.yaml"),
         "--tenants", str(EXAMPLES / "tenants.yaml"), "--port", str(port), "--state-dir", str(state_dir),
         "--start-timeout", str(START_TIMEOUT), "--drain-seconds", "5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    s = Stack(url=f"http://127.0.0.1:{port}", state_dir=state_dir, proc=proc)
    threading.Thread(target=_pump, args=(proc, s.lines), daemon=True).start()
    try:
        s.wait_for("the stack to serve", lambda: any("Serving." in line for line in s.lines), START_TIMEOUT + 30)
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
