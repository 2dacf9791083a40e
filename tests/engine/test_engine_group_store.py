"""The group store and rank ports of a real 2-rank gloo group, attacked by a foreign client on 127.0.0.1.

The store must listen only on the group address and admit only ranks that prove the group secret;
garbage, a plain TCPStore client, a wrong secret or a pile of idle connections must never make a
rank exit or stop the group's collectives.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist

from supernode.api import constants as C
from supernode.engine.store_gate import MAX_HANDSHAKES, GateRefused, open_through_gate

WORKER = Path(__file__).with_name("group_store_worker.py")
SECRET = "group-secret-for-tests-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rank:
    def __init__(self, rank: int, port: int) -> None:
        env = {**os.environ, C.ENV_RANK: str(rank), C.ENV_WORLD_SIZE: "2", C.ENV_LEADER_ADDR: "127.0.0.1",
               C.ENV_LEADER_PORT: str(port), C.ENV_GROUP_SECRET: SECRET, "OMP_NUM_THREADS": "1"}
        env.pop("GLOO_SOCKET_IFNAME", None)
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info: dict[str, Any] = {}

    def expect(self, prefix: str, timeout_s: float = 60) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"rank exited with {self.proc.wait()} while waiting for {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise AssertionError(f"no {prefix!r} within {timeout_s}s")

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()


@pytest.fixture
def group() -> Iterator[tuple[int, list[Rank]]]:
    port = _free_port()
    ranks = [Rank(r, port) for r in (0, 1)]
    try:
        for r in ranks:
            r.info = json.loads(r.expect("READY "))
        yield port, ranks
    finally:
        for r in ranks:
            if r.proc.poll() is None:
                r.proc.kill()
            r.proc.wait()


def _attack(host: str, port: int, payload: bytes) -> None:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(payload)
            s.settimeout(0.05)
            with contextlib.suppress(TimeoutError, OSError):
                s.recv(4096)
    except OSError:
        pass  # refused or reset: fine, the point is what happens to the group


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def test_foreign_clients_cannot_use_or_break_the_group_store(group: tuple[int, list[Rank]]) -> None:
    port, ranks = group
    listening = [a for r in ranks for a in r.info["listening"]]
    # Every listener of both ranks (gate, loopback store, tunnel, gloo pairs) is on the loopback address only.
    assert listening and all(a.startswith("127.0.0.1:") for a in listening), listening
    assert _refused("127.0.0.2", port), "the store gate answers on an address the group does not use"

    # A plain TCPStore client (what torch ranks speak) gets nothing from the gate.
    with pytest.raises(Exception):  # noqa: B017 - torch raises several types; any refusal will do
        foreign = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=2))
        foreign.set("supernode/heartbeat/0", "x")
    with pytest.raises(GateRefused):
        asyncio.run(open_through_gate("127.0.0.1", port, b"not the group secret"))

    # Garbage on the gate and on every rank port; more idle connections than handshakes allowed.
    payloads = [os.urandom(4096), b"\x00" * 64, b"\xff" * 100_000, b"SNSTORE1" + os.urandom(64),
                b"GET / HTTP/1.1\r\n\r\n"]
    for addr in listening:
        host, p = addr.rsplit(":", 1)
        for payload in payloads:
            _attack(host, int(p), payload)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_HANDSHAKES + 16)]
    time.sleep(2.5)  # longer than the heartbeat timeout: the ranks kept beating through all of it
    for s in idle:
        s.close()

    assert all(r.proc.poll() is None for r in ranks), [r.proc.poll() for r in ranks]
    for r in ranks:
        r.send("allreduce")
    assert [float(r.expect("SUM ", 30)) for r in ranks] == [3.0, 3.0]
    for r in ranks:
        r.send("exit")
    assert [r.proc.wait(30) for r in ranks] == [0, 0]
