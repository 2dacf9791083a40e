"""The planning inputs of one reconcile (operator/inputs.py, pure): pod partition, reservations and their TTL,
the mid-rollout capacity re-plan. Table tests; no cluster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from builders import k8s_node, k8s_pod, make_plan, operator_md

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.operator import builders
from supernode.operator import naming as N
from supernode.operator.inputs import PlanInputs, Reservation, live_reservations, planning_inputs

NODES = [k8s_node(f"sp{s}-n{i}", labels={C.NODE_LABEL_ASCEND_SUPERPOD: f"sp-{s}"},
                  allocatable={C.RESOURCE_ASCEND: "16"}) for s in range(2) for i in range(2)]
TTL = 600.0


def md(replicas: int = 1, image: str | None = None) -> ModelDeployment:
    b = operator_md("v4").uid().engine("vllm", **({"image": image} if image else {})).accelerator("ascend-910c", 16)
    return b.parallelism(tensor=16, data=2).placement(supernode="Required").replicas(replicas).obj()


def group_pods(deployment: str, superpod: int, *, rev: str, index: int = 0, ns: str = "llm") -> list[dict[str, Any]]:
    labels = {C.LABEL_DEPLOYMENT: deployment, C.LABEL_GROUP: str(index), C.LABEL_REVISION: rev}
    return [k8s_pod(f"{deployment}-g{index}-{rev}-{r}", f"sp{superpod}-n{r}", {C.RESOURCE_ASCEND: "16"},
                    labels={**labels, N.POD_INDEX_LABEL: str(r)}, namespace=ns) for r in range(2)]


def workload(m: ModelDeployment, superpod: int, *, rev: str) -> dict[str, Any]:
    plan = make_plan(m, [[f"sp{superpod}-n0", f"sp{superpod}-n1"]], [f"sp-{superpod}"])
    return builders.group_objects(m, plan, plan.groups[0], rev, lws=False)[0]


def reservation(deployment: str, superpod: int, since: float = 100.0) -> Reservation:
    return Reservation("llm", deployment, "0", "r9", (f"sp{superpod}-n0", f"sp{superpod}-n1"),
                       C.RESOURCE_ASCEND, 16, since)


@dataclass
class Case:
    name: str
    pods: list[dict[str, Any]] = field(default_factory=list)
    workloads: Callable[[ModelDeployment], list[dict[str, Any]]] = lambda m: []
    reservations: list[Reservation] = field(default_factory=list)
    now: float = 100.0
    spec: Callable[[], ModelDeployment] = md
    expect: Callable[[PlanInputs], Any] = lambda i: True


def supernodes(inputs: PlanInputs) -> list[str | None]:
    return [g.supernode if g.placed else None for g in inputs.plan.groups]


CASES = [
    Case("a fresh deployment is placed on the first free supernode",
         expect=lambda i: supernodes(i) == ["sp-0"] and i.mine == [] and i.groups == []),
    Case("another deployment's reservation holds its supernode until its pods show",
         reservations=[reservation("other", 0)], expect=lambda i: supernodes(i) == ["sp-1"]),
    Case("a deployment's own reservation does not hold it back",
         reservations=[reservation("v4", 1)], expect=lambda i: supernodes(i) == ["sp-0"]),
    Case("a reservation past its TTL is dropped",
         reservations=[reservation("other", 0, since=100.0 - TTL - 1)], expect=lambda i: supernodes(i) == ["sp-0"]),
    Case("another deployment's pods hold their devices",
         pods=group_pods("other", 0, rev="r1"), expect=lambda i: supernodes(i) == ["sp-1"] and i.mine == []),
    Case("pods labelled with this name in another namespace are not this deployment's",
         pods=group_pods("v4", 0, rev="r1", ns="batch"), expect=lambda i: supernodes(i) == ["sp-1"] and i.mine == []),
    Case("every other deployment's pods and reservations together can leave no room",
         pods=group_pods("other", 0, rev="r1"), reservations=[reservation("third", 1)],
         expect=lambda i: supernodes(i) == [None] and i.capacity.placeable == 0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_planning_inputs(case: Case) -> None:
    m = case.spec()
    live = live_reservations(case.reservations, case.pods, case.now, TTL)
    inputs = planning_inputs(m, NODES, case.pods, case.workloads(m), live)
    assert case.expect(inputs), (case.name, supernodes(inputs), inputs.capacity)


def test_a_current_group_keeps_its_binding_and_its_own_pods_do_not_count_against_it() -> None:
    m = md()
    rev = N.revision(m)
    inputs = planning_inputs(m, NODES, group_pods("v4", 1, rev=rev), [workload(m, 1, rev=rev)], [])
    assert supernodes(inputs) == ["sp-1"] and inputs.plan.groups[0].kept
    assert len(inputs.mine) == 2 and [(g.index, g.revision, g.ready_pods) for g in inputs.groups] == [(0, rev, 0)]


def test_mid_rollout_capacity_is_judged_without_the_old_groups() -> None:
    """One supernode free of others: the old group holds it, so the new one cannot be placed yet, but the
    cluster can hold the deployment once the old group is gone: not CapacityLimited."""
    nodes = NODES[:2]
    old = md(image="vllm:v1")
    new = md(image="vllm:v2")
    old_rev = N.revision(old)
    assert old_rev != N.revision(new)
    inputs = planning_inputs(new, nodes, group_pods("v4", 0, rev=old_rev), [workload(old, 0, rev=old_rev)], [])
    assert supernodes(inputs) == [None], "the old group still holds sp-0"
    assert inputs.capacity.placeable == 1 and inputs.capacity.desired == 1


@pytest.mark.parametrize(("case", "pods", "now", "kept"), [
    ("kept while its pods have not appeared and it is young", [], 100.0 + TTL, True),
    ("dropped once older than the TTL", [], 100.0 + TTL + 0.1, False),
    ("dropped once a pod of its group appears", group_pods("other", 0, rev="r9")[:1], 101.0, False),
    ("kept when only another revision's pods exist", group_pods("other", 0, rev="r8"), 101.0, True),
    ("kept when the same group exists in another namespace", group_pods("other", 0, rev="r9", ns="batch"), 101.0,
     True),
])
def test_reservation_expiry(case: str, pods: list[dict[str, Any]], now: float, kept: bool) -> None:
    res = reservation("other", 0)
    assert (live_reservations([res], pods, now, TTL) == [res]) is kept, case


def test_reservations_of_groups_without_devices_hold_nothing() -> None:
    assert Reservation("llm", "cpu", "0", "r", ("n0",), None, 0, 0.0).pods() == ()


def test_the_inventory_cache_gives_what_parsing_gives_and_reparses_only_changed_objects() -> None:
    from supernode.operator.inventory import inventory_from_k8s
    from supernode.operator.inventory_cache import InventoryCache

    cache = InventoryCache()
    pods = [*group_pods("other", 0, rev="r1"), {"metadata": "malformed"}]
    assert cache.inventory(NODES, pods) == inventory_from_k8s(NODES, pods)
    assert cache.inventory(NODES, pods) == inventory_from_k8s(NODES, pods)  # from the cache
    moved = [*NODES[:3], k8s_node("sp1-n1", labels={C.NODE_LABEL_ASCEND_SUPERPOD: "sp-9"},
                                  allocatable={C.RESOURCE_ASCEND: "8"})]
    fewer = pods[1:]
    assert cache.inventory(moved, fewer) == inventory_from_k8s(moved, fewer)
    assert len(cache._pods._old) + len(cache._pods._new) <= 2 * len(pods)  # bounded by recent calls


def test_the_inventory_cache_reuses_a_node_whose_usage_did_not_change() -> None:
    from supernode.operator.inventory import inventory_from_k8s
    from supernode.operator.inventory_cache import InventoryCache

    cache = InventoryCache()
    pods = list(group_pods("other", 0, rev="r1"))
    first = {n.name: n for n in cache.inventory(NODES, pods).nodes}
    again = {n.name: n for n in cache.inventory(NODES, list(pods)).nodes}
    held = [name for name, n in first.items() if n.used]
    assert held and all(again[name] is first[name] for name in held), "same node, same usage: the same NodeInfo"
    more = [*pods, *group_pods("third", 0, rev="r2")]
    assert cache.inventory(NODES, more) == inventory_from_k8s(NODES, more), "changed usage: recomputed"
