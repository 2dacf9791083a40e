"""The process edge: spawn, poll and stop child processes, each in its own process group.

Every child leads a new session (so a signal to its group reaches whatever it spawns) and, on
Linux, gets SIGTERM if `supernode up` itself dies (PR_SET_PDEATHSIG), so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from supernode.cli.local.secrets import open_private_log

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class Child:
    what: str  # e.g. "rank 1 (pid 4242)"
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()


def spawn(what: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> Child:
    with os.fdopen(open_private_log(log), "ab") as out:  # 0600 in a 0700 folder
        proc = subprocess.Popen(
            list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    return Child(what=f"{what} (pid {proc.pid})", proc=proc, log=log)


def signal_group(child: Child, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def stop_all(children: Sequence[Child], grace_seconds: float) -> None:
    """TERM each child's process group, wait up to `grace_seconds`, then KILL what is left; reap."""
    for c in children:
        if c.poll() is None:
            signal_group(c, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(c.poll() is None for c in children):
        time.sleep(0.05)
    for c in children:
        signal_group(c, signal.SIGKILL)  # also reaches grandchildren of an exited leader
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.proc.wait(timeout=5)


def tail(log: Path, lines: int = 15) -> str:
    try:
        data = log.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on the port now. Binds the way uvicorn does (SO_REUSEADDR), so
    connections of a previous run still in TIME_WAIT do not count as "in use"; a listener still does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(host: str = "127.0.0.1", avoid: frozenset[int] = frozenset()) -> Iterator[int]:
    """Ports the OS reports free now, never the same one twice from this iterator."""
    seen: set[int] = set(avoid)
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in seen:
            seen.add(port)
            yield port


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (dead, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): signal 0 succeeded
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"

