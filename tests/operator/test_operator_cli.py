"""`supernode operator` as a real process against the test API; rollout preview; declared RBAC."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from builders import operator_md
from fake_cluster import FakeCluster
from k8s_emulator import K8sEmulator
from operator_harness import eventually
from test_operator_lifecycle import MDS, MERGE, ascend_md, groups, setup, status

from supernode.operator import kube

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / p) for p in ("crds", "kube", "httpserver", "operator", "engine", "router", "cli")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


async def test_operator_process_reconciles_and_stops_cleanly(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster: FakeCluster = await setup(emu)
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supernode.cli", "operator", "-A", "--standalone", "--server", url, "--resync", "0.5",
        "--metrics-port", str(port), "--metrics-addr", "127.0.0.1", "--log-format", "json",
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with cluster.running(), httpx.AsyncClient(base_url=url) as c:
            await c.post(MDS, json=ascend_md())
            await eventually(lambda: status(emu).get("readyReplicas") == 2, timeout=20, what="ready via CLI")
            assert len(groups(emu)) == 2
            wanted = ['supernode_operator_groups{deployment="v4",namespace="llm",phase="Ready"} 2.0',
                      'supernode_operator_condition{condition="Ready",deployment="v4",namespace="llm"} 1.0',
                      "supernode_operator_reconcile_duration_seconds_count"]
            deadline = asyncio.get_running_loop().time() + 10
            while True:  # a resync or two: gauges follow the status
                metrics = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
                if all(w in metrics for w in wanted) or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert [w for w in wanted if w not in metrics] == [], metrics
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, out.decode()[-2000:]
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert any("GroupCreated" in entry.get("message", "") for entry in lines), "structured (json) logs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_preview_rollout_prints_steps(tmp_path: Path) -> None:
    md = operator_md("demo").replicas(2).rollout(1, 0, drain_timeout_seconds=60).dict()
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(md))
    out = subprocess.run([sys.executable, "-m", "supernode.cli", "operator", "preview-rollout", str(path)],
                         env=_env(), capture_output=True, text=True, timeout=60, check=True).stdout
    assert "peak groups 3, lowest ready 2" in out
    assert out.count("g0-old") == 2 and out.count("g1-old") == 2  # drained, then deleted


def test_every_client_method_declares_its_permissions() -> None:
    public = [n for n, f in inspect.getmembers(kube.KubeClient, inspect.isfunction) if not n.startswith("_")
              and n != "close"]
    for name in public:
        assert getattr(kube.KubeClient, name).__rbac__, f"{name} declares no RBAC rules"
    rules = {(r.api_group, r.resource): set(r.verbs) for r in kube.REQUIRED_PERMISSIONS}
    assert {"create", "patch", "delete", "list"} <= rules[("apps", "statefulsets")]
    assert {"create"} <= rules[("", "events")]
    assert {"patch"} <= rules[("supernode.io", "modeldeployments/status")]
    assert {"list", "watch"} <= rules[("", "nodes")] and {"list", "watch"} <= rules[("", "pods")]


async def test_two_replicas_with_leader_election_one_reconciles_then_failover(
        k8s: tuple[K8sEmulator, str], tmp_path: Path) -> None:
    emu, url = k8s
    cluster: FakeCluster = await setup(emu)
    health = {name: _free_port() for name in ("a", "b")}
    metrics = {name: _free_port() for name in health}
    procs: dict[str, asyncio.subprocess.Process] = {}
    logs = {name: tmp_path / f"{name}.log" for name in health}

    def holder() -> str:
        return str((emu.get("leases", "supernode-system", "supernode-operator", "coordination.k8s.io") or {})
                   .get("spec", {}).get("holderIdentity") or "")

    async def start(name: str) -> None:
        with logs[name].open("wb") as out:
            procs[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "supernode.cli", "operator", "-A", "--leader-elect", "--server", url,
                "--identity", name, "--lease-namespace", "supernode-system", "--lease-duration", "2",
                "--renew-deadline", "1.5", "--retry-period", "0.25", "--resync", "0.5", "--log-format", "json",
                "--liveness", f"http://127.0.0.1:{health[name]}/healthz", "--metrics-port", str(metrics[name]),
                "--metrics-addr", "127.0.0.1", env=_env(), stdout=out,
                stderr=asyncio.subprocess.STDOUT)

    def reconciled(name: str) -> bool:
        return "GroupCreated" in logs[name].read_text() or "reconcile" in logs[name].read_text().lower()

    try:
        async with cluster.running(), httpx.AsyncClient(base_url=url) as c:
            await start("a")
            await eventually(lambda: holder() == "a", timeout=15, what="a leads")
            await start("b")
            await c.post(MDS, json=ascend_md())
            await eventually(lambda: status(emu).get("readyReplicas") == 2, timeout=20, what="ready via leader")
            assert await _roles(c, health) == {"a": "leader", "b": "standby"}
            assert not reconciled("b"), "the standby must not reconcile"
            # Both serve /metrics from process start (one server each); only the Lease holder reports 1.
            text_a = (await c.get(f"http://127.0.0.1:{metrics['a']}/metrics")).text
            text_b = (await c.get(f"http://127.0.0.1:{metrics['b']}/metrics")).text
            assert "supernode_operator_reconciles_total" in text_a
            assert "supernode_operator_leader 1.0" in text_a and "supernode_operator_leader 0.0" in text_b
            assert "supernode_operator_leader_transitions_total 1.0" in text_a
            assert "supernode_operator_leader_transitions_total 0.0" in text_b
            procs["a"].kill()  # no release: b must wait for the Lease to expire
            await procs["a"].wait()
            killed = asyncio.get_running_loop().time()
            await eventually(lambda: holder() == "b", timeout=10, what="b takes over")
            assert asyncio.get_running_loop().time() - killed < 2 + 1.5, "takeover within leaseDuration (+retry)"
            patch = await c.patch(f"{MDS}/v4", json={"spec": {"replicas": 3}}, headers=MERGE)
            assert patch.status_code == 200, patch.text
            await eventually(lambda: status(emu).get("readyReplicas") == 3, timeout=20, what="b converges")
            assert len(groups(emu)) == 3, "no duplicate groups after failover"
            assert reconciled("b")
            text_b = (await c.get(f"http://127.0.0.1:{metrics['b']}/metrics")).text
            assert "supernode_operator_reconciles_total" in text_b
            assert "supernode_operator_leader 1.0" in text_b
            assert "supernode_operator_leader_transitions_total 1.0" in text_b
        procs["b"].terminate()
        assert await asyncio.wait_for(procs["b"].wait(), 20) == 0, logs["b"].read_text()[-2000:]
        assert holder() == "", "a clean shutdown releases the Lease"
    finally:
        for p in procs.values():
            if p.returncode is None:
                p.kill()
                await p.wait()


async def _roles(c: httpx.AsyncClient, health: dict[str, int], timeout: float = 15.0) -> dict[str, str]:
    """Each replica's role from its /healthz, once all answer (a standby serves it too)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return {n: (await c.get(f"http://127.0.0.1:{p}/healthz")).json()["role"] for n, p in health.items()}
        except httpx.TransportError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_leader_election_flags_are_validated() -> None:
    for flags, message in ((["--standalone", "--leader-elect"], "--standalone means no leader election"),
                           (["--leader-elect", "--renew-deadline", "20"], "renew-deadline < lease-duration")):
        proc = subprocess.run([sys.executable, "-m", "supernode.cli", "operator", *flags, "--server",
                               "http://127.0.0.1:9"], env=_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


async def test_leader_that_loses_its_lease_exits_1(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    await setup(emu)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supernode.cli", "operator", "-A", "--leader-elect", "--server", url, "--identity", "a",
        "--lease-namespace", "ns", "--lease-duration", "2", "--renew-deadline", "1", "--retry-period", "0.2",
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await eventually(lambda: emu.get("leases", "ns", "supernode-operator", "coordination.k8s.io")["spec"][
            "holderIdentity"] == "a", timeout=15, what="a leads")
        await emu.patch_object("leases", "ns", "supernode-operator", {"spec": {"holderIdentity": "b"}},
                               group="coordination.k8s.io")
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 1, out.decode()[-2000:]
        assert b"lost lease ns/supernode-operator" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
