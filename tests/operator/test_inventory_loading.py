"""Inventory loaders: our YAML format, Kubernetes Node/Pod dicts, and malformed input skipped with reasons."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import k8s_node, k8s_pod
from hypothesis import given, settings
from hypothesis import strategies as st

from supernode.api import constants as C
from supernode.operator.inventory import (
    InventoryError,
    inventory_from_dict,
    inventory_from_k8s,
    parse_device_quantity,
)
from supernode.operator.types import Taint

ROOT = Path(__file__).resolve().parents[2]
ASCEND = C.RESOURCE_ASCEND


def test_example_ascend_inventory_has_three_superpods_of_four_nodes() -> None:
    inv = inventory_from_dict(yaml.safe_load((ROOT / "examples/inventories/ascend-3-superpods.yaml").read_text()))
    assert inv.skipped == ()
    by_sp: dict[str, int] = {}
    for node in inv.nodes:
        if sp := node.labels.get(C.NODE_LABEL_ASCEND_SUPERPOD):
            by_sp[sp] = by_sp.get(sp, 0) + 1
            assert node.allocatable[ASCEND] == 16
    assert by_sp == {"sp-0": 4, "sp-1": 4, "sp-2": 4}
    busy = next(n for n in inv.nodes if n.name == "sp-2-a3-3")
    assert busy.used[ASCEND] == 16 and busy.taints == (Taint(key=ASCEND, effect="NoSchedule"),)


def test_example_h200_inventory_loads() -> None:
    inv = inventory_from_dict(yaml.safe_load((ROOT / "examples/inventories/h200-pool.yaml").read_text()))
    assert inv.skipped == () and len(inv.nodes) == 5
    assert next(n for n in inv.nodes if n.name == "h200-3").unschedulable


def test_yaml_labels_written_as_numbers_become_strings() -> None:
    inv = inventory_from_dict({"nodes": [{"name": "a", "labels": {"huawei.com/superpod-id": 3, "gpu": True}}]})
    assert inv.nodes[0].labels == {"huawei.com/superpod-id": "3", "gpu": "true"}


def test_malformed_entries_are_skipped_with_reasons_never_raised() -> None:
    inv = inventory_from_dict({"nodes": [
        "not-a-node",
        {"labels": {}},
        {"name": "bad-labels", "labels": ["x"]},
        {"name": "bad-qty", "allocatable": {ASCEND: "sixteen", "nvidia.com/gpu": -1, "x/y": "2k"}},
        {"name": "bad-taint", "taints": [{"value": "v"}, {"key": "k", "effect": "Sometimes"}, {"key": "ok"}]},
        {"name": "bad-label-value", "labels": {"a": {"nested": 1}, "b": "fine"}},
        {"name": "bad-qty"},
        {"name": "typo", "alocatable": {ASCEND: 16}},
    ], "pools": [{"namePrefix": "p-", "count": "many"}]})
    assert [n.name for n in inv.nodes] == ["bad-qty", "bad-taint", "bad-label-value", "typo"]
    assert inv.nodes[0].allocatable == {"x/y": 2000}
    assert inv.nodes[1].taints == (Taint(key="ok"),)
    assert inv.nodes[2].labels == {"b": "fine"}
    reasons = "\n".join(inv.skipped)
    for expected in ("nodes[0]: not a mapping", "nodes[1]: node has no name", "node bad-labels: labels is not a",
                     "'sixteen' is not a whole device count", "taint {'value': 'v'} has no key",
                     "unknown effect 'Sometimes'", "label a has a dict value", "node bad-qty: duplicate name",
                     "pools[0]: needs namePrefix", "node typo: unknown field 'alocatable' ignored"):
        assert expected in reasons


@pytest.mark.parametrize("doc", [[], "nodes", {"kind": "Inventory"}, {"nodes": "x"}, {"items": 3}])
def test_a_document_that_is_no_inventory_raises_a_clear_error(doc: Any) -> None:
    with pytest.raises(InventoryError):
        inventory_from_dict(doc)


@pytest.mark.parametrize(("value", "expected"), [
    ("16", 16), (8, 8), ("1k", 1000), ("2Ki", 2048), (4.0, 4), ("0", 0),
    ("1.5", None), (-1, None), ("", None), (True, None), (None, None), ("100m", None), ([1], None)])
def test_device_quantities(value: Any, expected: int | None) -> None:
    assert parse_device_quantity(value) == expected


def test_from_kubernetes_counts_devices_held_by_other_pods() -> None:
    nodes = [k8s_node("a3-0", labels={C.NODE_LABEL_ASCEND_SUPERPOD: "sp-0"}, allocatable={ASCEND: "16"}),
             k8s_node("a3-1", allocatable={ASCEND: "16"}, ready=False,
                      taints=[{"key": "k", "value": "v", "effect": "NoExecute"}], unschedulable=True)]
    pods = [
        k8s_pod("other", "a3-0", {ASCEND: "8"}),
        k8s_pod("mine", "a3-0", {ASCEND: "4"}, labels={C.LABEL_DEPLOYMENT: "v4-pro"}, namespace="llm"),
        k8s_pod("mine-elsewhere", "a3-0", {ASCEND: "2"}, labels={C.LABEL_DEPLOYMENT: "v4-pro"}, namespace="x"),
        k8s_pod("done", "a3-0", {ASCEND: "16"}, phase="Succeeded"),
        k8s_pod("pending", None, {ASCEND: "16"}),
    ]
    inv = inventory_from_k8s(nodes, pods, exclude_deployment="v4-pro", namespace="llm")
    a3_0, a3_1 = inv.nodes
    assert a3_0.allocatable == {ASCEND: 16} and a3_0.used == {ASCEND: 10}
    assert a3_0.labels == {C.NODE_LABEL_ASCEND_SUPERPOD: "sp-0"} and a3_0.ready
    assert not a3_1.ready and a3_1.unschedulable and a3_1.taints == (Taint("k", "v", "NoExecute"),)
    assert inventory_from_k8s(nodes, pods).nodes[0].used == {ASCEND: 14}


def test_init_containers_count_as_the_max_not_the_sum() -> None:
    pod = k8s_pod("p", "n", {ASCEND: "4"})
    pod["spec"]["initContainers"] = [{"name": "i", "resources": {"limits": {ASCEND: "8"}}}]
    inv = inventory_from_k8s([k8s_node("n", allocatable={ASCEND: "16"})], [pod])
    assert inv.nodes[0].used == {ASCEND: 8}


def test_a_kubectl_list_of_nodes_and_pods_loads() -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": [
        k8s_node("g0", allocatable={"nvidia.com/gpu": "8"}), k8s_pod("p", "g0", {"nvidia.com/gpu": "2"})]}
    inv = inventory_from_dict(doc)
    assert inv.nodes[0].allocatable == {"nvidia.com/gpu": 8} and inv.nodes[0].used == {"nvidia.com/gpu": 2}


def test_kubernetes_objects_without_a_ready_condition_are_not_ready() -> None:
    node = k8s_node("n")
    del node["status"]["conditions"]
    assert not inventory_from_k8s([node], []).nodes[0].ready


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["metadata", "spec", "status", "name", "labels", "allocatable", "conditions", "taints", "containers",
         "resources", "limits", "nodeName", "phase", "type", "key", ASCEND]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_junk, max_size=3), st.lists(_junk, max_size=3))
def test_malformed_kubernetes_objects_never_crash_the_loader(nodes: list[Any], pods: list[Any]) -> None:
    inventory_from_k8s(nodes, pods)
    with contextlib.suppress(InventoryError):
        inventory_from_dict({"nodes": nodes})
