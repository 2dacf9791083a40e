"""The supervisor with real processes (stand-ins for engine ranks and the router, tests only):
gang restart, endpoint readiness, fail-fast start, and no orphans after shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supernode.api.models import ModelDeployment
from supernode.cli.local import procs
from supernode.cli.local.layout import layout_groups
from supernode.cli.local.machine import Phase, Policy
from supernode.cli.local.statefile import ENDPOINTS_FILE, load_state
from supernode.cli.local.supervisor import RouterLaunch, StartFailed, Supervisor
from supernode.operator import planner
from supernode.operator.types import Inventory, NodeInfo

STANDIN = str(Path(__file__).parent / "standins" / "standin.py")
INVENTORY = Inventory(nodes=(NodeInfo(name="local"),))
LINES: list[str] = []  # the supervisor's progress output in the current test


class MD:
    """Fluent builder: MD("flash").replicas(2).tensor(2).obj()."""

    def __init__(self, name: str):
        self.doc: dict[str, Any] = {
            "apiVersion": "supernode.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": f"m-{name}", "source": "builtin://tiny"}, "accelerator": {"type": "cpu"},
                     "recovery": {"backoffSeconds": 1, "maxBackoffSeconds": 2, "maxGroupRestarts": 3}},
        }

    def replicas(self, n: int) -> MD:
        self.doc["spec"]["replicas"] = n
        return self

    def tensor(self, n: int) -> MD:
        self.doc["spec"]["parallelism"] = {"tensor": n}
        return self

    def env(self, **env: str) -> MD:
        self.doc["spec"]["engine"] = {"env": env}
        return self

    def obj(self) -> ModelDeployment:
        return ModelDeployment.from_obj(self.doc)


def make_supervisor(tmp_path: Path, *mds: ModelDeployment) -> Supervisor:
    ports = procs.free_ports()
    groups = []
    for md in mds:
        groups += layout_groups(md, planner.plan(md, INVENTORY), python=sys.executable, model_dir=tmp_path,
                                device="cpu", ports=ports, start_timeout_seconds=30, unhealthy_after=3,
                                engine_cmd=[sys.executable, STANDIN, "engine"])
    rport = next(ports)
    router = RouterLaunch(argv=(sys.executable, STANDIN, "router", "--port", str(rport)), env=dict(os.environ),
                          url=f"http://127.0.0.1:{rport}", policy=Policy(backoff_seconds=0.5, max_restarts=5))
    sup = Supervisor(groups, router, tmp_path, out=LINES.append, kill_grace_seconds=2, probe_timeout=0.5,
                     liveness_interval=0.2)
    LINES.clear()
    return sup


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Supervisor]:
    sup = make_supervisor(tmp_path, MD("pro").tensor(2).obj(), MD("flash").replicas(2).obj())
    yield sup
    sup.shutdown(drain_seconds=1)


def drive(sup: Supervisor, until: Callable[[], bool], timeout: float = 20) -> None:
    """Run the supervisor loop on this (main) thread until `until()` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, {u: (s.phase, s.reason) for u, s in sup.units.items()}
        sup.tick()
        time.sleep(0.05)


def endpoints(sup: Supervisor) -> dict[tuple[str, int], bool]:
    data = json.loads((sup.state_dir / ENDPOINTS_FILE).read_text())
    return {(e["deployment"], e["group"]): e["ready"] for e in data["endpoints"]}


def all_pids(sup: Supervisor) -> list[int]:
    return [c.pid for kids in sup.children.values() for c in kids]


def descendants(pids: list[int]) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=True).stdout
    groups = set(pids)
    return [int(p) for p, g in (line.split() for line in out.splitlines()) if int(g) in groups]


def test_all_groups_and_the_router_come_up_and_are_published(stack: Supervisor) -> None:
    stack.start(threading.Event(), timeout=30, interval=0.05)
    assert endpoints(stack) == {("pro", 0): True, ("flash", 0): True, ("flash", 1): True}
    state = load_state(stack.state_dir)
    assert state is not None
    pro = next(g for g in state.groups if g.deployment == "pro")
    assert [r.rank for r in pro.ranks] == [0, 1] and all(r.pid and procs.pid_alive(r.pid) for r in pro.ranks)
    assert state.router_pid and procs.pid_alive(state.router_pid)


def test_a_killed_rank_takes_its_group_down_unpublishes_it_and_the_group_restarts(stack: Supervisor) -> None:
    stack.start(threading.Event(), timeout=30, interval=0.05)
    leader, worker = stack.children["pro/0"]
    os.kill(worker.pid, signal.SIGKILL)
    drive(stack, lambda: stack.units["pro/0"].phase is Phase.BACKOFF)
    assert leader.poll() is not None, "the other rank of the group must be stopped too"
    assert endpoints(stack)[("pro", 0)] is False
    assert endpoints(stack)[("flash", 0)] is True, "other groups are untouched"
    drive(stack, lambda: stack.units["pro/0"].phase is Phase.READY)
    assert endpoints(stack)[("pro", 0)] is True
    assert stack.units["pro/0"].restarts == 1
    assert {c.pid for c in stack.children["pro/0"]}.isdisjoint({leader.pid, worker.pid})


def test_a_killed_router_is_restarted(stack: Supervisor) -> None:
    stack.start(threading.Event(), timeout=30, interval=0.05)
    os.kill(stack.children["router"][0].pid, signal.SIGKILL)
    drive(stack, lambda: stack.units["router"].restarts == 1 and stack.units["router"].phase is Phase.READY)


def test_shutdown_leaves_no_process_or_grandchild_behind(stack: Supervisor) -> None:
    stack.start(threading.Event(), timeout=30, interval=0.05)
    pids = all_pids(stack)
    time.sleep(0.3)  # let each stand-in start its grandchild
    family = descendants(pids)
    assert len(family) >= 2 * len(pids)
    stack.shutdown(drain_seconds=1)
    assert [p for p in family if procs.pid_alive(p)] == []
    assert all(s.phase is Phase.STOPPED for s in stack.units.values())


def test_a_group_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    sup = make_supervisor(tmp_path, MD("bad").env(STANDIN_FAIL="1").obj())
    try:
        with pytest.raises(StartFailed, match=r"(?s)bad/0: rank 0 \(pid \d+\) exited \(exit code 3\).*bad device"):
            sup.start(threading.Event(), timeout=30, interval=0.05)
    finally:
        sup.shutdown(drain_seconds=1)
    assert not any(procs.pid_alive(p) for p in all_pids(sup))


def test_status_probes_what_the_state_file_records(stack: Supervisor) -> None:
    from supernode.cli.local.status import collect

    stack.start(threading.Event(), timeout=30, interval=0.05)
    got = collect(stack.state_dir)
    assert got is not None
    probes, _models = got
    assert {p.name: (p.health, p.alive, p.phase) for p in probes} == {
        name: ("200", True, "Ready") for name in ("router", "pro/0", "flash/0", "flash/1")}
    os.kill(stack.children["flash/1"][0].pid, signal.SIGKILL)
    stack.children["flash/1"][0].proc.wait()
    probes, _ = collect(stack.state_dir) or ([], [])
    flash1 = next(p for p in probes if p.name == "flash/1")
    assert flash1.health == "down" and not flash1.alive


def test_a_hung_leader_is_detected_by_liveness_probes_and_its_group_restarted(stack: Supervisor) -> None:
    stack.start(threading.Event(), timeout=30, interval=0.05)
    stack.kill_grace = 0.5  # a stopped process cannot act on SIGTERM: the restart waits out the grace, then kills
    leader = stack.children["flash/0"][0]
    os.kill(leader.pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        drive(stack, lambda: stack.units["flash/0"].restarts == 1, timeout=15)
    finally:
        signal_group_cont(leader.pid)
    assert any("flash/0: Restarting (not healthy for 3 probes in a row" in line for line in LINES), LINES
    assert leader.poll() is not None
    drive(stack, lambda: stack.units["flash/0"].phase is Phase.READY)
    assert stack.units["pro/0"].phase is Phase.READY, "the others were never touched"


def signal_group_cont(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
