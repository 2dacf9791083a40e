"""`supernode up` with spec.pools: each pool laid out and supervised as its own units, the router told
each group's pool and weight, a pool that does not fit this machine a warning rather than an error."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from supernode.api.pools import pool_views
from supernode.cli.local import runtime
from supernode.cli.local.layout import layout_groups
from supernode.cli.local.runtime import CannotStart, UpOptions, _plan_groups
from supernode.cli.local.specs import SpecError, load_deployments, parse_documents
from supernode.operator import planner
from supernode.operator.types import Inventory, NodeInfo

ROOT = Path(__file__).resolve().parents[2]
MIXED = ROOT / "examples" / "local-mixed" / "mixed.yaml"

BASE = """apiVersion: supernode.io/v1alpha1
kind: ModelDeployment
metadata: {name: two}
spec:
  model: {name: m, source: "builtin://tiny"}
  accelerator: {type: cpu}
  pools:
  - {name: cpu, replicas: 1}
"""


def test_the_example_pools_lay_out_as_their_own_units_with_pool_and_weight() -> None:
    (md,) = load_deployments([MIXED])
    inventory = Inventory(nodes=(NodeInfo(name="local"),))
    ports = itertools.count(9000)
    groups = []
    for view, placed in zip(pool_views(md), planner.plan_pools(md, inventory), strict=True):
        groups += layout_groups(view.md, placed, python="py", model_dir=Path("/ck"), device="cpu", ports=ports,
                                pool=view.name, capacity_weight=view.capacity_weight)
    assert [(g.unit, len(g.ranks)) for g in groups] == [("mixed/big/0", 2), ("mixed/small/0", 1)]
    assert [r.log_name for r in groups[0].ranks] == ["mixed-big-g0-r0.log", "mixed-big-g0-r1.log"]
    endpoints = [g.endpoint(ready=True) for g in groups]
    assert [(e.deployment, e.pool, e.capacity_weight) for e in endpoints] == [("mixed", "big", 2.0),
                                                                               ("mixed", "small", 1.0)]
    assert groups[0].ranks[0].argv[groups[0].ranks[0].argv.index("--tensor-parallel") + 1] == "2"


def test_a_pool_the_local_runtime_cannot_run_is_refused_naming_the_pool() -> None:
    text = BASE + "  - {name: gpu, engine: {type: vllm}}\n"
    with pytest.raises(SpecError) as err:
        parse_documents(text, "f.yaml")
    assert any(p.endswith("pool gpu: spec.engine.type: 'vllm' needs a cluster; locally only 'builtin' runs")
               for p in err.value.problems), err.value.problems


def plan_groups(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """`_plan_groups` on `text` with checkpoints stubbed out (no checkpoint is built): (units, printed)."""
    path = tmp_path / "md.yaml"
    path.write_text(text)
    monkeypatch.setattr(runtime, "ensure_checkpoint", lambda *a, **k: tmp_path)
    printed: list[str] = []
    groups, _ = _plan_groups(load_deployments([path]), UpOptions(files=[str(path)]), tmp_path, printed.append)
    return [g.unit for g in groups], printed


def test_a_pool_that_does_not_fit_this_machine_is_a_warning_and_the_others_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE + "  - {name: h200, accelerator: {type: nvidia-h200, devicesPerPod: 4}, parallelism: {tensor: 4}}\n"
    from supernode.cli.local.inventory import probe_devices

    if probe_devices().cuda >= 4:  # pragma: no cover
        pytest.skip("this machine has 8 GPUs: the pool would fit")
    units, printed = plan_groups(text, tmp_path, monkeypatch)
    assert units == ["two/cpu/0"]
    assert any(line.startswith("warning: two/h200: only 0 of 1 groups fit on this machine") for line in printed)
    only_gpu = text.replace("  - {name: cpu, replicas: 1}\n", "")
    with pytest.raises(CannotStart, match="two: no group of any pool fits on this machine"):
        plan_groups(only_gpu, tmp_path, monkeypatch)


def test_autoscaling_with_pools_runs_each_pool_at_its_replicas_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from supernode.cli.local.scaling import LocalScaler

    text = BASE.replace("  pools:\n", "  autoscaling: {minReplicas: 1, maxReplicas: 3}\n  pools:\n")
    units, printed = plan_groups(text, tmp_path, monkeypatch)
    assert units == ["two/cpu/0"]  # no parked groups: nothing scales this deployment here
    assert any("supernode up runs each pool at its replicas" in line for line in printed), printed
    scaler = LocalScaler(load_deployments([tmp_path / "md.yaml"]), lambda: [])
    try:
        assert scaler.scaled == {}
    finally:
        scaler.close()
