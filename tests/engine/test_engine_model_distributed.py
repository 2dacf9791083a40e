"""Tensor/expert parallel over real gloo processes on 127.0.0.1, and peer-loss handling."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from supernode.api.constants import ENV_LEADER_ADDR, ENV_LEADER_PORT, ENV_RANK, ENV_WORLD_SIZE
from supernode.engine.checkpoint import init_checkpoint
from supernode.engine.config import EngineConfig
from supernode.engine.distributed import PEER_LOST_EXIT_CODE, DistEnv
from supernode.engine.runner import ModelRunner, SeqInput

WORKER = Path(__file__).with_name("engine_model_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(model_dir: Path, layouts: list[tuple[int, int]], out: Path, scenario: str) -> list[subprocess.Popen[str]]:
    """One process per rank of a 2-rank world; each process builds the groups in `layouts` ((tp, ep)) in turn."""
    world = 2
    spec = ";".join(f"{tp},{ep},{_free_port()}" for tp, ep in layouts)
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            ENV_RANK: str(rank),
            ENV_WORLD_SIZE: str(world),
            ENV_LEADER_ADDR: "127.0.0.1",
        }
        args = [sys.executable, str(WORKER), str(model_dir), spec, str(out), scenario]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 60) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-dist")
    init_checkpoint(str(path), "tiny", seed=7)
    return path


def test_tp_and_ep_match_single_process(ckpt: Path, tmp_path: Path) -> None:
    layouts = {"tp2": (2, 1), "ep2": (1, 2), "tp2ep2": (2, 2)}
    _finish(_spawn(ckpt, list(layouts.values()), tmp_path / "out", "generate"))
    worker = _load_worker()
    single = ModelRunner(EngineConfig(str(ckpt), num_kv_blocks=32, block_size=4, cpu_threads=1))
    ref = worker.generate(single)
    for i, name in enumerate(layouts):
        got = torch.load(tmp_path / f"out.{i}.pt")
        assert torch.equal(got["tokens"], ref["tokens"]), name
        assert (got["logits"] - ref["logits"]).abs().max().item() <= 1e-5, name
        assert (got["single"] - ref["single"]).abs().max().item() <= 1e-5, name
        assert (got["prompt"] - ref["prompt"]).abs().max().item() <= 1e-5, name


def test_v4_tp_and_ep_match_single_process(tmp_path: Path) -> None:
    """DeepSeek-V4: attention replicated, experts / shared expert / vocab sharded; same logits as one process."""
    ckpt = tmp_path / "tiny-v4"
    init_checkpoint(str(ckpt), "tiny-v4", seed=3)
    layouts = {"tp2": (2, 1), "ep2": (1, 2)}
    _finish(_spawn(ckpt, list(layouts.values()), tmp_path / "out", "generate"))
    single = ModelRunner(EngineConfig(str(ckpt), num_kv_blocks=32, block_size=4, cpu_threads=1))
    ref = _load_worker().generate(single)
    for i, name in enumerate(layouts):
        got = torch.load(tmp_path / f"out.{i}.pt")
        assert torch.equal(got["tokens"], ref["tokens"]), name
        assert (got["logits"] - ref["logits"]).abs().max().item() <= 1e-5, name
        assert (got["single"] - ref["single"]).abs().max().item() <= 1e-5, name


def _load_worker() -> Any:
    spec = importlib.util.spec_from_file_location("engine_model_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "READY" in line:
            return
        if not line and proc.poll() is not None:
            break
    pytest.fail(f"rank 0 never became ready (rc={proc.poll()})")


@pytest.mark.parametrize(
    ("scenario", "sig"),
    [("idle", signal.SIGKILL), ("busy", signal.SIGKILL), ("busy", signal.SIGSTOP)],
    ids=["killed-while-idle", "killed-mid-step", "hung-mid-step"],
)
def test_leader_exits_nonzero_when_follower_dies(ckpt: Path, tmp_path: Path, scenario: str, sig: int) -> None:
    """SIGKILL: the follower is gone; SIGSTOP: it hangs (its sockets stay open) — both end the group."""
    leader, follower = _spawn(ckpt, [(2, 1)], tmp_path / "x", scenario)
    try:
        _wait_ready(leader)
        follower.send_signal(sig)
        start = time.monotonic()
        rc = leader.wait(timeout=15)
        elapsed = time.monotonic() - start
    finally:
        for p in (leader, follower):
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert rc != 0
    assert elapsed < 10, f"leader took {elapsed:.1f}s to notice"
    if scenario == "idle" or sig == signal.SIGSTOP:  # nothing fails by itself: only the heartbeat can notice
        assert rc == PEER_LOST_EXIT_CODE


def test_follower_exits_nonzero_when_leader_dies(ckpt: Path, tmp_path: Path) -> None:
    leader, follower = _spawn(ckpt, [(2, 1)], tmp_path / "x", "idle")
    try:
        _wait_ready(leader)
        leader.send_signal(signal.SIGKILL)
        rc = follower.wait(timeout=15)
    finally:
        for p in (leader, follower):
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert rc != 0


def test_dist_env_from_env_with_local_ranks() -> None:
    env = {ENV_RANK: "1", ENV_WORLD_SIZE: "2", ENV_LEADER_ADDR: "leader.svc", ENV_LEADER_PORT: "1234"}
    got = DistEnv.from_env(env, nproc_per_node=4, local_rank=3)
    assert got == DistEnv(rank=7, world_size=8, local_rank=3, leader_addr="leader.svc", leader_port=1234)
    assert DistEnv.from_env({}) == DistEnv()
    with pytest.raises(ValueError, match="SUPERNODE_RANK"):
        DistEnv.from_env({ENV_RANK: "2", ENV_WORLD_SIZE: "2"})
    with pytest.raises(ValueError, match="nproc-per-node"):
        DistEnv.from_env({}, nproc_per_node=2, local_rank=2)


def test_a_local_rank_started_by_the_cli_follows_the_leader(ckpt: Path) -> None:
    """`--nproc-per-node 2` on one pod: this process is local rank 0 (leader); rank 1 is what
    `supernode engine serve` starts for it (`--local-rank 1`)."""
    port = _free_port()
    env = {ENV_RANK: "0", ENV_WORLD_SIZE: "1", ENV_LEADER_PORT: str(port)}
    config = EngineConfig(str(ckpt), tensor_parallel=2, num_kv_blocks=8, heartbeat_timeout_s=10, cpu_threads=1)
    child = subprocess.Popen(
        [sys.executable, "-m", "supernode.cli", "engine", "serve", "--model-dir", str(ckpt), "--tensor-parallel", "2",
         "--num-kv-blocks", "8", "--cpu-threads", "1", "--nproc-per-node", "2", "--local-rank", "1"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    failures: list[str] = []
    try:
        leader = ModelRunner(config, DistEnv.from_env(env, nproc_per_node=2, local_rank=0), failures.append)
        try:
            got = leader.run([SeqInput([1, 2, 3, 4, 5], 0, [0, 1])])
        finally:
            leader.shutdown()
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    single = ModelRunner(config.replace(tensor_parallel=1)).run([SeqInput([1, 2, 3, 4, 5], 0, [0, 1])])
    assert (got - single).abs().max().item() <= 1e-5
    assert child.returncode == 0, out
    assert failures == []


def test_a_rank_that_cannot_load_its_shard_fails_the_group_fast(ckpt: Path, tmp_path: Path) -> None:
    """Expert 5 lives on rank 1 only (EP=2); without it rank 1 fails to load and rank 0 must not wait."""
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    state = load_file(broken / "model.safetensors")
    del state["model.layers.1.mlp.experts.5.down_proj.weight"]
    save_file(state, broken / "model.safetensors")
    leader, follower = _spawn(broken, [(1, 2)], tmp_path / "x", "generate")
    start = time.monotonic()
    try:
        follower_out, _ = follower.communicate(timeout=60)
        leader.communicate(timeout=15)
    finally:
        for p in (leader, follower):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert follower.returncode != 0 and "experts.5.down_proj" in follower_out
    assert leader.returncode != 0
    assert time.monotonic() - start < 30
