"""The planning indexes kept across passes (operator/cluster_index.py, nodepool.CapacityMemo): planning from them
gives exactly what planning from the node and pod lists gives, through a scripted run of cluster changes.
Table tests; no cluster."""

from __future__ import annotations

import random
from typing import Any

import pytest
from builders import k8s_node, k8s_pod, operator_md

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.operator import naming as N
from supernode.operator.cluster_index import NodeIndex, PodIndex
from supernode.operator.inputs import Indexed, Reservation, live_reservations, own_pods, planning_inputs
from supernode.operator.inventory import inventory_from_k8s
from supernode.operator.nodepool import CapacityMemo
from supernode.operator.planner import plan

SP = C.NODE_LABEL_ASCEND_SUPERPOD


def node(name: str, sp: str, devices: int = 16, **kw: Any) -> dict[str, Any]:
    return k8s_node(name, labels={SP: sp, "pool": "a" if name.endswith("0") else "b"},
                    allocatable={C.RESOURCE_ASCEND: str(devices)}, **kw)


def pod(deployment: str, group: int, rank: int, node_name: str | None, *, rev: str = "r1", ns: str = "llm",
        phase: str = "Running", devices: int = 16) -> dict[str, Any]:
    return k8s_pod(f"{deployment}-g{group}-{rev}-{rank}", node_name, {C.RESOURCE_ASCEND: str(devices)},
                   labels={C.LABEL_DEPLOYMENT: deployment, C.LABEL_GROUP: str(group), C.LABEL_REVISION: rev,
                           N.POD_INDEX_LABEL: str(rank)}, namespace=ns, phase=phase)


def specs() -> list[ModelDeployment]:
    def base(policy: str) -> Any:
        return (operator_md("v4").uid().engine("vllm").accelerator("ascend-910c", 16).parallelism(tensor=16, data=2)
                .placement(supernode=policy))
    return [base("Required").replicas(2).obj(), base("Preferred").replicas(3).obj(), base("None").replicas(1).obj(),
            base("Required").replicas(1).node_selector({"pool": "a"}).obj(),
            base("Required").replicas(2).tolerate("maint", effect="NoSchedule").obj()]


class World:
    """Nodes and pods as the informers hold them (keyed, in order), and the indexes fed from the same changes."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {f"sp{s}-n{i}": node(f"sp{s}-n{i}", f"sp-{s}")
                                                 for s in range(4) for i in range(2)}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.index, self.node_index, self.memo = PodIndex(), NodeIndex(), CapacityMemo(size=3)
        self._listed: tuple[tuple[int, ...], list[dict[str, Any]]] = ((), [])

    def node_list(self) -> list[dict[str, Any]]:
        """The same list while no node changed (as the node informer hands it out)."""
        ids = tuple(map(id, self.nodes.values()))
        if ids != self._listed[0]:
            self._listed = (ids, list(self.nodes.values()))
        return self._listed[1]

    def put(self, p: dict[str, Any]) -> None:
        key = (p["metadata"]["namespace"], p["metadata"]["name"])
        self.pods[key] = p
        self.index.put(key, p)

    def remove(self, key: tuple[str, str]) -> None:
        self.pods.pop(key, None)
        self.index.remove(key)

    def check(self, reservations: list[Reservation], workloads: list[dict[str, Any]], what: str) -> None:
        nodes, pods = self.node_list(), list(self.pods.values())
        self.node_index.sync(nodes)
        indexed = Indexed(self.node_index, self.index, self.memo)
        assert live_reservations(reservations, pods, 100.0, 600.0) == live_reservations(
            reservations, [], 100.0, 600.0, index=self.index), what
        for m in specs():
            expect = planning_inputs(m, nodes, pods, workloads, reservations)
            got = planning_inputs(m, nodes, pods, workloads, reservations, indexed=indexed)
            assert got == expect, (what, m.spec.placement)
            assert own_pods(pods, "llm", "v4") == self.index.of_deployment("llm", "v4"), what


def workload_of(m: ModelDeployment, index: int, nodes: list[str], rev: str) -> dict[str, Any]:
    from builders import make_plan

    from supernode.operator import builders
    p = make_plan(m, [nodes] * (index + 1), [None] * (index + 1))
    return builders.group_objects(m, p, p.groups[index], rev, lws=False)[0]


def test_scripted_changes_plan_the_same_from_the_indexes_as_from_the_lists() -> None:
    w = World()
    rev = N.revision(specs()[0])
    others = [Reservation("llm", "other", "0", "r9", ("sp1-n0", "sp1-n1"), C.RESOURCE_ASCEND, 16, 90.0)]
    w.check([], [], "an empty cluster")
    for rank in range(2):
        w.put(pod("other", 0, rank, f"sp0-n{rank}"))
    w.check(others, [], "another deployment's group and a reservation")
    for rank in range(2):
        w.put(pod("v4", 0, rank, f"sp2-n{rank}", rev=rev))
    kept = [workload_of(specs()[0], 0, ["sp2-n0", "sp2-n1"], rev)]
    w.check(others, kept, "this deployment's current group is kept where it is")
    w.nodes["sp3-n0"] = node("sp3-n0", "sp-3", unschedulable=True)
    w.check(others, kept, "a node cordoned")
    w.nodes["sp3-n1"] = node("sp3-n1", "sp-9")
    w.check(others, kept, "a node relabelled into another supernode")
    w.nodes["sp2-n1"] = node("sp2-n1", "sp-2", ready=False)
    w.check(others, kept, "a node of the kept group is lost")
    w.nodes["sp1-n0"] = node("sp1-n0", "sp-1", taints=[{"key": "maint", "effect": "NoSchedule"}])
    w.check(others, kept, "a tainted node (one spec tolerates it)")
    w.put(pod("other", 1, 0, "sp1-n1", rev="r9"))
    w.check(others, kept, "a reserved group's pod appears: its reservation ends")
    w.put({**pod("other", 0, 0, "sp0-n0"), "status": {"phase": "Succeeded"}})
    w.check(others, kept, "a pod finished: its devices are free")
    w.remove(("llm", "other-g0-r1-1"))
    w.check(others, kept, "a pod deleted")
    relabelled = pod("other", 1, 0, "sp1-n1", rev="r9")
    relabelled["metadata"]["labels"][C.LABEL_DEPLOYMENT] = "v4"
    w.put(relabelled)
    w.check(others, kept, "a pod relabelled into this deployment")
    w.put(pod("v4", 0, 0, "sp0-n1", rev="old"))
    w.check(others, [*kept, workload_of(specs()[0], 1, ["sp0-n1", "sp0-n1"], "old")], "mid-rollout")
    del w.nodes["sp0-n1"]
    w.nodes["sp4-n0"] = node("sp4-n0", "sp-4", devices=32)
    w.check(others, kept, "a node removed and another added")
    bad = pod("odd", 0, 0, "sp4-n0")
    bad["spec"]["containers"][0]["resources"] = "garbage"
    w.put(bad)
    assert not Indexed(w.node_index, w.index).exact, "a malformed pod: the full path names it in the notes"
    w.check(others, kept, "a malformed pod")
    w.remove(("llm", "odd-g0-r1-0"))
    w.check(others, kept, "the malformed pod gone")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_plan_the_same_from_the_indexes_as_from_the_lists(seed: int) -> None:
    rng, w = random.Random(seed), World()
    names = list(w.nodes)
    for step in range(40):
        choice = rng.random()
        if choice < 0.5:
            dep = rng.choice(["v4", "other", "third"])
            w.put(pod(dep, rng.randrange(3), rng.randrange(2), rng.choice([*names, None]), rev=rng.choice(["r1", "r2"]),
                      devices=rng.choice([8, 16]), phase=rng.choice(["Running", "Pending", "Failed"])))
        elif choice < 0.75 and w.pods:
            w.remove(rng.choice(list(w.pods)))
        else:
            name = rng.choice(names)
            w.nodes[name] = node(name, rng.choice(["sp-0", "sp-1", "sp-2"]), devices=rng.choice([16, 32]),
                                 ready=rng.random() > 0.2, unschedulable=rng.random() < 0.2)
        w.check([], [], f"seed {seed} step {step}")
        assert w.index.used == inventory_usage(w), f"seed {seed} step {step}: usage by node"


def inventory_usage(w: World) -> dict[str, dict[str, int]]:
    bare = [{**n, "status": {**n["status"], "allocatable": {}}} for n in w.nodes.values()]
    names = {p["spec"]["nodeName"] for p in w.pods.values() if p["spec"]["nodeName"]}
    bare += [k8s_node(n) for n in names - set(w.nodes)]
    inv = inventory_from_k8s(bare, list(w.pods.values()))
    return {n.name: {k: v for k, v in n.used.items() if v} for n in inv.nodes if any(n.used.values())}


def test_the_capacity_memo_plans_what_a_fresh_index_plans_and_stays_bounded() -> None:
    memo = CapacityMemo(size=2)
    nodes = [node(f"sp{s}-n{i}", f"sp-{s}") for s in range(3) for i in range(2)]
    for m in specs() * 2:
        inv = inventory_from_k8s(nodes, [pod("x", 0, 0, "sp0-n0")])
        assert plan(m, inv, memo=memo) == plan(m, inv), m.spec.placement
        nodes[1] = node("sp0-n1", "sp-1" if nodes[1]["metadata"]["labels"][SP] == "sp-0" else "sp-0")
    assert len(memo._by_filter) <= 2
