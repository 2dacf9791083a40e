"""Shared helpers for the engine benchmarks: a checkpoint, a served engine process, peak RSS."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from supernode.api.constants import ENV_LEADER_PORT, ENV_RANK, ENV_WORLD_SIZE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def checkpoint(model_dir: str | None, preset: str = "small") -> Path:
    if model_dir:
        return Path(model_dir)
    out = Path(tempfile.mkdtemp(prefix="supernode-bench-")) / preset
    cmd = [sys.executable, "-m", "supernode.cli", "engine", "init-checkpoint", str(out), "--preset", preset]
    subprocess.run(cmd, check=True, capture_output=True)
    print(f"created {preset} checkpoint in {out}")
    return out


class EngineProcess:
    """`supernode engine serve` on 127.0.0.1 in a subprocess."""

    def __init__(self, model_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, ENV_RANK: "0", ENV_WORLD_SIZE: "1", ENV_LEADER_PORT: str(free_port())}
        cmd = [sys.executable, "-m", "supernode.cli", "engine", "serve", "--model-dir", str(model_dir)]
        cmd += ["--port", str(self.port), "--served-model-name", "bench", *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("engine did not start")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def self_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
