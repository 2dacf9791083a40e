"""`supernode engine serve` as real processes on a tiny checkpoint: health, chat, TP=2 parity, rank death."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from supernode.api.constants import ENV_LEADER_ADDR, ENV_LEADER_PORT, ENV_RANK, ENV_WORLD_SIZE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    cmd = [sys.executable, "-m", "supernode.cli", "engine", "init-checkpoint", str(out), "--preset", "tiny"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return out


class Served:
    def __init__(self, model_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, ENV_RANK: "0", ENV_WORLD_SIZE: "1", ENV_LEADER_ADDR: "127.0.0.1"}
        env[ENV_LEADER_PORT] = str(free_port())
        # the model directory the way vLLM users type it (`serve MODEL_DIR`); other tests use --model-dir
        cmd = [sys.executable, "-m", "supernode.cli", "engine", "serve", str(model_dir)]
        cmd += [
            "--port",
            str(self.port),
            "--served-model-name",
            "tiny",
            "--num-kv-blocks",
            "128",
            "--cpu-threads",
            "1",
        ]
        cmd += extra
        self.log = tempfile.NamedTemporaryFile("w+", prefix="engine-", suffix=".log")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("engine did not become healthy")

    def children(self) -> list[int]:
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                out.append(int(stat.parent.name))
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def served(tiny_checkpoint: Path) -> Iterator[Served]:
    s = Served(tiny_checkpoint)
    try:
        s.wait_healthy()
        yield s
    finally:
        s.stop()
        s.log.close()


def greedy_ids(url: str) -> list[int]:
    body = {"model": "tiny", "prompt": "hello world", "max_tokens": 12, "temperature": 0, "return_token_ids": True}
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["choices"][0]["token_ids"])


def test_serve_health_chat_modes_and_prefix_cache(served: Served) -> None:
    msgs = [{"role": "user", "content": "hello"}]
    for kwargs, has_reasoning in (({"thinking": False}, False), ({"thinking": True, "reasoning_effort": "max"}, True)):
        body = {"model": "tiny", "messages": msgs, "max_tokens": 24, "chat_template_kwargs": kwargs, "seed": 3}
        r = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        msg = r.json()["choices"][0]["message"]
        assert ("reasoning_content" in msg) is has_reasoning
    ids = greedy_ids(served.url)
    assert ids == greedy_ids(served.url)  # the second run hits the prefix cache and decodes the same


def test_two_ranks_match_one_and_a_dead_rank_stops_the_leader(tiny_checkpoint: Path, served: Served) -> None:
    expected = greedy_ids(served.url)
    # the idle leader learns of the follower's death from the heartbeat: 2 s (as the other group tests), not 5 s
    two = Served(tiny_checkpoint, "--nproc-per-node", "2", "--tensor-parallel", "2", "--expert-parallel", "2",
                 "--heartbeat-interval-s", "0.2", "--heartbeat-timeout-s", "2")
    try:
        two.wait_healthy()
        assert greedy_ids(two.url) == expected
        (follower,) = two.children()
        os.kill(follower, signal.SIGKILL)
        assert two.proc.wait(30) not in (0, None)
    finally:
        two.stop()
        two.log.close()


def test_bad_model_dir_fails_fast(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "supernode.cli", "engine", "serve", "--model-dir", str(tmp_path), "--port", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "config.json" in r.stderr


def test_the_served_engine_applies_the_shared_http_limits(served: Served) -> None:
    """Issue 10: the engine process runs uvicorn with supernode.httpserver (oversized headers → 431,
    no server header), like the router."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 40_000 + b"\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 431")
    r = httpx.get(f"{served.url}/health", timeout=10)
    assert r.status_code == 200 and "server" not in r.headers


def test_sigterm_drains_in_flight_stream_then_stops(tiny_checkpoint: Path, served: Served) -> None:
    body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 48, "ignore_eos": True, "stream": True}
    lines = []
    with httpx.stream("POST", f"{served.url}/v1/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and not lines:
                served.proc.send_signal(signal.SIGTERM)  # mid-stream
            lines.append(line)
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and json.loads(data[-2])["choices"][0]["finish_reason"] == "length"
    assert served.stop() in (0, -signal.SIGTERM)
    assert "engine stopped" in served.output()
