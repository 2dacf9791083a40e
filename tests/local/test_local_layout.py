"""What each rank is started with: the operator's torch.distributed env, local addresses and ports."""

from __future__ import annotations

import itertools
from pathlib import Path

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.cli.local.layout import layout_groups
from supernode.operator import planner
from supernode.operator.types import Inventory, NodeInfo


def md(name: str, *, tensor: int = 1, replicas: int = 1, acc: str = "cpu", per_pod: int = 0) -> ModelDeployment:
    return ModelDeployment.from_obj({
        "apiVersion": "supernode.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {"model": {"name": f"m-{name}", "aliases": ["deepseek-chat"], "source": "builtin://tiny"},
                 "accelerator": {"type": acc, "devicesPerPod": per_pod}, "parallelism": {"tensor": tensor},
                 "replicas": replicas, "engine": {"env": {"EXTRA": "1"}}},
    })


def test_each_rank_gets_the_distributed_env_with_the_leader_on_localhost() -> None:
    d = md("pro", tensor=2)
    plan = planner.plan(d, Inventory(nodes=(NodeInfo(name="local"),)))
    (group,) = layout_groups(d, plan, python="py", model_dir=Path("/ck"), device="cpu", ports=iter([9001, 9002]),
                             cpu_threads=3)
    assert group.unit == "pro/0" and group.port == 9001 and group.rendezvous_port == 9002
    assert [r.rank for r in group.ranks] == [0, 1]
    for r in group.ranks:
        env = r.env
        assert env[C.ENV_RANK] == str(r.rank) and env[C.ENV_WORLD_SIZE] == "2"
        assert (env[C.ENV_LEADER_ADDR], env[C.ENV_LEADER_PORT]) == ("127.0.0.1", "9002")
        assert env[C.ENV_TENSOR_PARALLEL] == "2" and env[C.ENV_DEVICE] == "cpu" and env["EXTRA"] == "1"
        assert env["OMP_NUM_THREADS"] == "1"
    argv = group.ranks[0].argv
    assert argv[:5] == ("py", "-m", "supernode.cli", "engine", "serve")
    assert argv[argv.index("--port") + 1] == "9001" and argv[argv.index("--tensor-parallel") + 1] == "2"
    assert argv[argv.index("--alias") + 1] == "deepseek-chat"
    assert argv[argv.index("--cpu-threads") + 1] == "3"
    endpoint = group.endpoint(ready=False)
    assert endpoint.url == "http://127.0.0.1:9001" and endpoint.model == "m-pro" and not endpoint.ready
    assert [m.value for m in endpoint.modes] == list(C.MODES)


def test_gpu_ranks_on_one_machine_get_distinct_devices() -> None:
    d = md("g", tensor=2, replicas=2, acc="nvidia-h200", per_pod=1)
    inv = Inventory(nodes=(NodeInfo(name="local", labels={C.NODE_LABEL_NVIDIA_CLIQUE: "local"},
                                    allocatable={C.RESOURCE_NVIDIA: 4}),))
    plan = planner.plan(d, inv)
    groups = layout_groups(d, plan, python="py", model_dir=Path("/ck"), device="cuda", ports=itertools.count(9000),
                           device_ids=itertools.count())
    visible = [r.env[C.ENV_CUDA_VISIBLE_DEVICES] for g in groups for r in g.ranks]
    assert visible == ["0", "1", "2", "3"]


def test_engine_cmd_replaces_only_the_command_prefix() -> None:
    d = md("f")
    plan = planner.plan(d, Inventory(nodes=(NodeInfo(name="local"),)))
    (group,) = layout_groups(d, plan, python="py", model_dir=Path("/ck"), device="cpu", ports=iter([1, 2]),
                             engine_cmd=["stand-in", "engine"])
    assert group.ranks[0].argv[:3] == ("stand-in", "engine", "--model-dir")
