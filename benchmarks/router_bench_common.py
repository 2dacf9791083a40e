"""Shared plumbing for the router benchmarks: free ports, processes on 127.0.0.1, percentiles."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FAKE_ENGINE = ROOT / "tests" / "router" / "fake_engine.py"
MODEL = "deepseek-v4-flash"


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def env() -> dict[str, str]:
    e = os.environ.copy()
    paths = [str(ROOT / d) for d in ("crds", "kube", "httpserver", "operator", "engine", "router", "cli")]
    e["PYTHONPATH"] = os.pathsep.join([*paths, e.get("PYTHONPATH", "")])
    e.update(HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")  # sglang-router must not reach out
    return e


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not up after {timeout}s")


class Procs(ExitStack):
    """Child processes terminated on exit."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="supernode-bench-"))
        self.pids: dict[str, int] = {}  # name -> pid, e.g. to read a router's CPU time
        self.ops: dict[str, str] = {}  # our router's API URL -> its ops URL (/metrics)
        self.callback(shutil.rmtree, self.tmp, True)

    def spawn(self, args: Sequence[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed by the exit stack
        self.callback(log.close)
        proc = subprocess.Popen(list(args), env=env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.pids[name] = proc.pid

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

        self.callback(stop)
        return proc

    def log_tail(self, name: str, n: int = 800) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def engines(self, ports: list[int], *extra: str) -> None:
        proc = self.spawn([sys.executable, str(FAKE_ENGINE), "--port", *map(str, ports), *extra], "engines")
        for p in ports:
            wait_http(f"http://127.0.0.1:{p}/health", proc=proc)

    def our_router(self, port: int, engine_ports: list[int], routing: dict[str, object] | None = None,
                   max_concurrency: int = 64, extra: dict[str, object] | None = None, name: str = "router") -> str:
        eps = {"endpoints": [{"url": f"http://127.0.0.1:{p}", "model": MODEL, "maxConcurrency": max_concurrency}
                             for p in engine_ports]}
        (self.tmp / "endpoints.json").write_text(json.dumps(eps))
        ops = free_ports(1)[0]
        cfg = {"server": {"port": port, "log_requests": False, "metrics_port": ops},
               "health": {"scrape_interval_s": 1.0},
               "discovery": {"type": "local", "path": str(self.tmp / "endpoints.json")}, "admission": None}
        if routing:
            cfg["routing"] = routing
        cfg.update(extra or {})
        (self.tmp / f"{name}.json").write_text(json.dumps(cfg))
        proc = self.spawn([sys.executable, "-m", "supernode.cli", "router", "--config", str(self.tmp / f"{name}.json"),
                           "--log-level", "warning"], name)
        wait_http(f"http://127.0.0.1:{port}/ready", proc=proc)
        self.ops[f"http://127.0.0.1:{port}"] = f"http://127.0.0.1:{ops}"
        return f"http://127.0.0.1:{port}"

    def sglang_router(self, port: int, engine_ports: list[int], policy: str, *extra: str) -> str:
        exe = shutil.which("sglang-router") or str(Path(sys.executable).parent / "sglang-router")
        if not Path(exe).exists():
            raise RuntimeError("sglang-router is not installed (pip install sglang-router)")
        metrics_port = free_ports(1)[0]
        proc = self.spawn([exe, "launch", "--host", "127.0.0.1", "--port", str(port), "--worker-urls",
                           *[f"http://127.0.0.1:{p}" for p in engine_ports], "--policy", policy,
                           "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
                           "--log-level", "warn", *extra], f"sglang-{policy}")
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        body = {"model": MODEL, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        while time.time() < deadline:  # ready when it routes a request
            if proc.poll() is not None:
                raise RuntimeError(f"sglang-router exited {proc.returncode}: {self.log_tail(f'sglang-{policy}')}")
            try:
                if httpx.post(f"{url}/v1/chat/completions", json=body, timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"sglang-router not routing after 60s: {self.log_tail(f'sglang-{policy}')}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]
