"""One fluent launcher for `supernode up` in the e2e tests (the session stack, the mixed-pool stack, the
precise-routing stack):

    with UpLauncher(tmp, UpStack).spec(EXAMPLES / "flash.yaml").deployment(make_md(...).dict())
            .tenants(path, key).drain(5).start_timeout(240).run() as stack:
        stack.openai().chat.completions.create(...)

`run()` starts `supernode up` in its own session, follows its output, yields an `UpStack` once it
prints "Serving.", and on exit stops it with SIGINT (SIGKILL for the process group after 30 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import anthropic
import httpx
import openai
import yaml

from supernode.cli.local.secrets import engine_auth_headers
from supernode.cli.local.statefile import ROUTER_CONFIG, GroupRecord, LocalState, load_state

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UpStack:
    """A running `supernode up`: its URL, state dir, output, and clients for the router and the engines."""

    def __init__(self, url: str, state_dir: Path, proc: subprocess.Popen[str], key: str = "anonymous"):
        self.url, self.state_dir, self.proc, self.key = url, state_dir, proc, key
        self.lines: list[str] = []

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

    def groups(self) -> dict[str, GroupRecord]:
        """Replica groups by deployment (`flash`, or `mixed/big` for a pool)."""
        return {g.deployment: g for g in self.state().groups}

    def group_urls(self) -> dict[str, str]:
        """Engine URL per `deployment/group` (the router's `x-supernode-endpoint` names)."""
        return {f"{g.deployment}/{g.group}": g.url for g in self.state().groups}

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def wait_for(self, what: str, cond: Callable[[], Any], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            assert self.proc.poll() is None, f"supernode up exited while waiting for {what}:\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")

    # --- clients ------------------------------------------------------------------------------------
    def openai(self, key: str | None = None, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key=key or self.key, max_retries=0, timeout=60, **kw)

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key or self.key, max_retries=0, timeout=60)

    def engine_openai(self, group: str) -> openai.OpenAI:
        """The OpenAI SDK on one engine group directly (behind the router's back), with this run's
        engine token."""
        token = engine_auth_headers(self.state_dir)["authorization"].removeprefix("Bearer ")
        return openai.OpenAI(base_url=self.group_urls()[group] + "/v1", api_key=token, max_retries=0, timeout=60)

    def engine_cached_blocks(self, group: str) -> set[int]:
        """The blocks an engine reports caching: the snapshot that starts its /v1/kv_events stream."""
        url = self.group_urls()[group] + "/v1/kv_events"
        with httpx.stream("GET", url, params={"format": "ndjson"}, headers=engine_auth_headers(self.state_dir),
                          timeout=10) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                record = json.loads(line)
                assert record["type"] == "snapshot", record
                return set(record["block_hashes"])
        raise AssertionError(f"{group}: /v1/kv_events ended before its snapshot")

    def router_metrics(self) -> str:
        """The router's /metrics (its own loopback port, from the router config `up` wrote)."""
        config = yaml.safe_load((self.state_dir / ROUTER_CONFIG).read_text())
        return httpx.get(f"http://127.0.0.1:{config['server']['metrics_port']}/metrics", timeout=5).text

    def router_gauge(self, name: str, **labels: str) -> float | None:
        """One sample of the router's metrics (labels given: the sample with those values)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.router_metrics()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None


S = TypeVar("S", bound=UpStack)


class UpLauncher(Generic[S]):
    """Builds the `supernode up` command line; `run()` starts it and yields the serving stack (an
    instance of `stack_class`)."""

    # builtin:// checkpoints created by this session's stacks, copied into later stacks' state dirs (e2e/conftest.py
    # sets it): the first stack to use a preset still has `up` create it, the others skip ~1.2 s each.
    checkpoint_cache: Path | None = None

    def __init__(self, workdir: Path, stack_class: type[S]):
        self.workdir = workdir
        self.stack_class = stack_class
        self._specs: list[Path] = []
        self._flags: dict[str, str] = {"--start-timeout": "240", "--drain-seconds": "2"}
        self._env: dict[str, str] = {}
        self._key = "anonymous"

    def spec(self, *paths: Path) -> UpLauncher[S]:
        self._specs.extend(paths)
        return self

    def deployment(self, obj: dict[str, Any]) -> UpLauncher[S]:
        """A ModelDeployment given as an object (e.g. tests.builders' `make_md(...).dict()`), written
        to the work dir."""
        path = self.workdir / f"{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        return self.spec(path)

    def tenants(self, path: Path, key: str) -> UpLauncher[S]:
        """The tenants file, and the API key the stack's clients use by default."""
        self._flags["--tenants"] = str(path)
        self._key = key
        return self

    def drain(self, seconds: float) -> UpLauncher[S]:
        self._flags["--drain-seconds"] = str(seconds)
        return self

    def start_timeout(self, seconds: float) -> UpLauncher[S]:
        self._flags["--start-timeout"] = str(seconds)
        return self

    def env(self, **values: str) -> UpLauncher[S]:
        self._env.update(values)
        return self

    def argv(self, port: int, state_dir: Path) -> list[str]:
        flags = [x for kv in self._flags.items() for x in kv]
        return [sys.executable, "-m", "supernode.cli", "up", *map(str, self._specs), "--port", str(port),
                "--state-dir", str(state_dir), *flags]

    @contextlib.contextmanager
    def run(self) -> Iterator[S]:
        assert self._specs, "UpLauncher: no spec"
        state_dir = self.workdir / "state"
        cache = self.checkpoint_cache
        if cache is not None:
            for preset in cache.iterdir():
                shutil.copytree(preset, state_dir / "checkpoints" / preset.name)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "SUPERNODE_ADMIN_KEY"}  # up generates one (admin.key)
        env.update(PYTHONUNBUFFERED="1", **self._env)
        proc = subprocess.Popen(self.argv(port, state_dir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        stack = self.stack_class(f"http://127.0.0.1:{port}", state_dir, proc, self._key)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                stack.lines.append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        try:
            stack.wait_for("the stack to serve", lambda: any("Serving." in ln for ln in stack.lines),
                           float(self._flags["--start-timeout"]) + 30)
            if cache is not None:
                for preset in (state_dir / "checkpoints").glob("[!.]*"):  # complete ones (no .partial)
                    if not (cache / preset.name).exists():
                        shutil.copytree(preset, cache / preset.name)
            yield stack
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT (what Ctrl-C sends: `up` drains and stops everything), then SIGKILL for the whole group."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
