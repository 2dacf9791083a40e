"""`supernode up --detach`: run the stack in the background, return once it serves.

The process forks before anything starts: the child leads a new session (Ctrl-C in this terminal
no longer reaches it), writes its output to STATE_DIR/up.log and runs the stack as usual; the
parent follows that log, echoes it, and returns 0 once the stack serves, or the child's exit code
if it stops first (a bad spec, a busy port, ...).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

UP_LOG = "up.log"
READY_MARK = "Serving."


def fork_into_background(state_dir: Path, out: Callable[[str], None], timeout: float) -> int | None:
    """In the parent: the exit code for the CLI. In the child: None (carry on running the stack)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / UP_LOG
    log.write_text("")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        return None
    return _follow(log, pid, out, timeout)


def _follow(log: Path, pid: int, out: Callable[[str], None], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        lines = log.read_text(errors="replace").splitlines()
        for line in lines[seen:]:
            out(line)
            if line.startswith(READY_MARK):
                out(f"Running in the background (pid {pid}); output in {log}. Stop it: kill -INT {pid}")
                return 0
        seen = len(lines)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            for line in log.read_text(errors="replace").splitlines()[seen:]:
                out(line)
            return os.waitstatus_to_exitcode(status) or 1
        if time.monotonic() > deadline:
            out(f"still not serving after {timeout:g}s; it keeps starting in the background (pid {pid}), see {log}")
            return 1
        time.sleep(0.1)
