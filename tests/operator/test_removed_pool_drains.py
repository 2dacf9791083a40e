"""A pool taken out of spec.pools: its groups drain first (the routers stop sending them requests) and are
deleted once drained, idle or past rollout.drainTimeoutSeconds — the scale-down path, reused. Pure steps
here; tests/operator/test_operator_mixed_pools_live.py runs it through the real operator."""

from __future__ import annotations

from typing import Any

from builders import operator_md
from test_mixed_pools import mixed, render_all

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.operator.pool_pass import event_prefix, removed_pools

NOW = 1_000_000.0


def workloads_and_pods(md: ModelDeployment, *, ready: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every pool's StatefulSets as rendered, and one pod (rank 0) per group, Ready or not."""
    sts = [o for o in render_all(md) if o["kind"] == "StatefulSet"]
    rank0 = {"apps.kubernetes.io/pod-index": "0"}
    pods = [{"metadata": {"name": f"{s['metadata']['name']}-0", "namespace": "llm",
                          "labels": {**s["spec"]["template"]["metadata"]["labels"], **rank0}},
             "spec": {"nodeName": "n"},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
            for s in sts]
    return sts, pods


def without_h200() -> ModelDeployment:
    md = mixed().obj()
    return md.model_copy(update={"spec": md.spec.model_copy(update={"pools": md.spec.pools[:1]})})


def drain(sts: list[dict[str, Any]], pool: str, *, drained: bool = False) -> None:
    """Mark the pool's groups as the executor does, draining since NOW (1970-01-12T13:46:40Z)."""
    for s in sts:
        if s["metadata"]["labels"].get(C.LABEL_POOL) == pool:
            s["metadata"]["annotations"] = {**s["metadata"].get("annotations", {}), C.ANNOTATION_DRAINING: "true",
                                            C.ANNOTATION_DRAIN_STARTED: "1970-01-12T13:46:40Z"}
            if drained:
                s["metadata"]["annotations"][C.ANNOTATION_DRAINED] = "true"


def test_ready_groups_of_a_removed_pool_are_drained_not_deleted() -> None:
    sts, pods = workloads_and_pods(mixed().obj())
    [gone] = removed_pools(without_h200(), sts, pods, [], {"ascend"}, NOW)
    assert gone.pool == "h200" and event_prefix(gone.md) == "pool h200 "
    assert sorted(gone.step.drain) == sorted(g.name for g in gone.groups) and len(gone.groups) == 2
    assert gone.step.delete == () and gone.step.create == ()


def test_draining_groups_wait_for_the_timeout_then_go() -> None:
    md = without_h200()  # operator_md: drainTimeoutSeconds 0, so set one
    md = md.model_copy(update={"spec": md.spec.model_copy(update={
        "rollout": md.spec.rollout.model_copy(update={"drain_timeout_seconds": 60})})})
    sts, pods = workloads_and_pods(mixed().obj())
    drain(sts, "h200")
    [gone] = removed_pools(md, sts, pods, [], {"ascend"}, NOW + 30)
    assert gone.step.delete == () and gone.step.drain == () and len(gone.step.waiting) == 2
    [gone] = removed_pools(md, sts, pods, [], {"ascend"}, NOW + 60)
    assert sorted(gone.step.delete) == sorted(g.name for g in gone.groups)


def test_groups_the_routers_report_idle_go_before_the_timeout() -> None:
    md = without_h200()
    md = md.model_copy(update={"spec": md.spec.model_copy(update={
        "rollout": md.spec.rollout.model_copy(update={"drain_timeout_seconds": 600})})})
    sts, pods = workloads_and_pods(mixed().obj())
    drain(sts, "h200", drained=True)
    [gone] = removed_pools(md, sts, pods, [], {"ascend"}, NOW + 1)
    assert len(gone.step.delete) == 2


def test_groups_that_serve_nothing_go_on_the_next_pass_without_waiting() -> None:
    md = without_h200()
    md = md.model_copy(update={"spec": md.spec.model_copy(update={
        "rollout": md.spec.rollout.model_copy(update={"drain_timeout_seconds": 600})})})
    sts, pods = workloads_and_pods(mixed().obj(), ready=False)
    [gone] = removed_pools(md, sts, pods, [], {"ascend"}, NOW)
    assert len(gone.step.drain) == 2  # marked like any scale-down
    drain(sts, "h200")
    [gone] = removed_pools(md, sts, pods, [], {"ascend"}, NOW + 1)
    assert len(gone.step.delete) == 2  # not ready: nothing to wait for


def test_pools_in_the_spec_and_specs_without_removed_pools_give_nothing() -> None:
    sts, pods = workloads_and_pods(mixed().obj())
    assert removed_pools(mixed().obj(), sts, pods, [], {"ascend", "h200"}, NOW) == []
    plain = operator_md("v4").obj()
    assert removed_pools(plain, [], [], [], {""}, NOW) == []


def test_a_spec_gaining_pools_drains_the_unnamed_pool() -> None:
    plain = operator_md("v4").uid().accelerator("ascend-910c", 16).parallelism(tensor=16).replicas(1).obj()
    sts, pods = workloads_and_pods(plain)
    [gone] = removed_pools(mixed().obj(), sts, pods, [], {"ascend", "h200"}, NOW)
    assert gone.pool == "" and event_prefix(gone.md) == "" and len(gone.step.drain) == 1
