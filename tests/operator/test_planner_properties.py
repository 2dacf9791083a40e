"""Property tests: whatever the inventory and spec, no node is over-committed, no Required group
spans two supernodes, kept groups stay put, and planning is deterministic."""

from __future__ import annotations

from collections import Counter
from typing import Any

from builders import make_inventory, make_md, make_node
from hypothesis import given, settings
from hypothesis import strategies as st

from supernode.api import constants as C
from supernode.operator.planner import bindings, plan
from supernode.operator.types import Inventory, Plan


@st.composite
def inventories(draw: Any) -> Inventory:
    builder = make_inventory()
    for i in range(draw(st.integers(0, 14))):
        devices = draw(st.sampled_from([0, 8, 16, 16]))
        used = draw(st.sampled_from([0, 0, 0, devices // 2, devices, draw(st.integers(0, devices))]))
        node = make_node(f"n{i}").ascend(devices, used=used)
        superpod = draw(st.sampled_from([None, "sp-0", "sp-1", "sp-2"]))
        if superpod:
            node.superpod(superpod)
        if draw(st.integers(0, 9)) == 0:
            node.taint("maintenance")
        if draw(st.integers(0, 9)) == 0:
            node.cordoned()
        builder.add(node)
    return builder.obj()


@st.composite
def deployments(draw: Any) -> Any:
    per_pod = draw(st.sampled_from([1, 4, 8, 16, 16]))
    pods = draw(st.integers(1, 4))
    return make_md("p").accelerator("ascend-910c", per_pod).group(pods=pods) \
        .replicas(draw(st.integers(0, 6))) \
        .placement(draw(st.sampled_from(["Required", "Preferred", "None"])), spread=draw(st.booleans())).obj()


def _assert_sound(p: Plan, inventory: Inventory, policy: str) -> None:
    nodes = {n.name: n for n in inventory.nodes}
    taken = Counter(pod.node for g in p.groups if g.placed for pod in g.pods)
    for name, pods in taken.items():
        node = nodes[name]  # type: ignore[index]
        assert node.used.get(C.RESOURCE_ASCEND, 0) + pods * p.devices_per_pod \
            <= node.allocatable.get(C.RESOURCE_ASCEND, 0), f"{name} over-committed"
    for g in p.groups:
        assert g.placed == all(pod.node for pod in g.pods)
        assert len(g.pods) == p.pods_per_group
        if g.placed and policy == "Required":
            domains = {nodes[pod.node].labels.get(C.NODE_LABEL_ASCEND_SUPERPOD) or f"node/{pod.node}"
                       for pod in g.pods if pod.node}
            assert len(domains) == 1, f"group {g.index} spans {domains}"
    assert p.capacity.placeable == sum(g.placed for g in p.groups)


@settings(max_examples=150, deadline=None)
@given(inventories(), deployments())
def test_no_plan_over_commits_a_node_and_no_required_group_spans_supernodes(inventory: Inventory, md: Any) -> None:
    p = plan(md, inventory)
    _assert_sound(p, inventory, md.spec.placement.supernode.value)
    assert plan(md, inventory) == p


@settings(max_examples=75, deadline=None)
@given(inventories(), deployments(), st.integers(1, 3))
def test_scaling_up_keeps_every_placed_group_where_it_was(inventory: Inventory, md: Any, extra: int) -> None:
    before = plan(md, inventory)
    bigger = md.model_copy(update={"spec": md.spec.model_copy(update={"replicas": md.spec.replicas + extra})})
    after = plan(bigger, inventory, existing=bindings(before))
    _assert_sound(after, inventory, md.spec.placement.supernode.value)
    for g in before.groups:
        if g.placed:
            assert [p.node for p in after.groups[g.index].pods] == [p.node for p in g.pods]
            assert after.groups[g.index].kept
