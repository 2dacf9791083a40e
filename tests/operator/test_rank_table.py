"""HCCL rank tables: golden files for one- and two-node A3 groups (format v1.2), the A2 fallback (v1.0),
bad device annotations, and the per-group ConfigMap the pods copy the table from.

Regenerate goldens with `SUPERNODE_UPDATE_GOLDEN=1 pytest tests/operator/test_rank_table.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from builders import k8s_pod

from supernode.api import constants as C
from supernode.operator.observe import group_states
from supernode.operator.ranktable import DEVICE_ANNOTATION, RankTableError, pod_devices, rank_table, render
from supernode.operator.ranktable_objects import KEY_PODS, KEY_TABLE, group_configmap

GOLDEN = Path(__file__).parent / "golden"


def annotated(name: str, node: int, rank: int, *, devices: int = 16, super_pod: int | None = 0,
              group: str = "0", revision: str = "r1", uid: str | None = None) -> dict[str, Any]:
    """A group pod as the Ascend device plugin leaves it: its NPUs in the device annotation."""
    pod = k8s_pod(name, f"a3-{node}", {C.RESOURCE_ASCEND: str(devices)}, labels={
        C.LABEL_GROUP: group, C.LABEL_REVISION: revision, "apps.kubernetes.io/pod-index": str(rank)})
    info: dict[str, Any] = {"pod_name": name, "server_id": f"10.0.0.{10 + node}", "host_ip": f"10.0.0.{10 + node}",
                            "devices": [{"device_id": str(d), "device_ip": f"192.168.{node}.{d + 1}",
                                         **({"super_device_id": str(node * devices + d)} if super_pod is not None
                                            else {})} for d in range(devices)]}
    if super_pod is not None:
        info["super_pod_id"] = super_pod
    pod["metadata"].update(uid=uid or f"uid-{name}", annotations={DEVICE_ANNOTATION: json.dumps(info)})
    return pod


def sts(name: str, pods: int, revision: str = "r1") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                         "labels": {C.LABEL_GROUP: "0", C.LABEL_REVISION: revision}},
            "spec": {"replicas": pods}}


def table_of(pods: list[dict[str, Any]]) -> dict[str, Any]:
    parsed = [pod_devices(p, int(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"])) for p in pods]
    return rank_table([p for p in parsed if p is not None])


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SUPERNODE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (SUPERNODE_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize(("nodes", "golden"), [(1, "ranktable-a3-1node.json"), (2, "ranktable-a3-2nodes.json")])
def test_a3_rank_table_matches_golden(nodes: int, golden: str) -> None:
    pods = [annotated(f"g0-{n}", n, n) for n in range(nodes)]
    table = table_of(list(reversed(pods)))  # pod order in the index does not matter; ranks do
    check_golden(golden, render(table))
    assert table["version"] == "1.2" and table["status"] == "completed"
    assert table["server_count"] == str(nodes)
    ranks = [d["rank_id"] for s in table["server_list"] for d in s["device"]]
    assert ranks == [str(r) for r in range(16 * nodes)]
    assert [s["server_id"] for s in table["super_pod_list"][0]["server_list"]] == [
        s["server_id"] for s in table["server_list"]]


def test_devices_are_in_numeric_order_and_two_superpods_are_listed_apart() -> None:
    pods = [annotated("g0-0", 0, 0, devices=12, super_pod=3), annotated("g0-1", 1, 1, devices=2, super_pod=7)]
    table = table_of(pods)
    assert [d["device_id"] for d in table["server_list"][0]["device"]] == [str(d) for d in range(12)]
    assert [(p["super_pod_id"], [s["server_id"] for s in p["server_list"]]) for p in table["super_pod_list"]] == [
        ("3", ["10.0.0.10"]), ("7", ["10.0.0.11"])]


def test_without_superpod_data_the_plain_v1_0_table_is_written() -> None:
    table = table_of([annotated("g0-0", 0, 0, devices=8, super_pod=None)])
    assert table["version"] == "1.0" and "super_pod_list" not in table
    assert all("super_device_id" not in d for d in table["server_list"][0]["device"])


@pytest.mark.parametrize(("raw", "field"), [
    ("{not json", "is not JSON"),
    (json.dumps({"server_id": "10.0.0.1", "devices": []}), "devices must be a non-empty list"),
    (json.dumps({"server_id": "10.0.0.1", "devices": [{"device_id": "0"}]}), "devices[0].device_ip"),
    (json.dumps({"devices": [{"device_id": "0", "device_ip": "1.2.3.4"}]}), "server_id"),
])
def test_a_malformed_annotation_names_the_pod_and_the_field(raw: str, field: str) -> None:
    pod = k8s_pod("g0-0", "a3-0", {})
    pod["metadata"]["annotations"] = {DEVICE_ANNOTATION: raw}
    with pytest.raises(RankTableError, match="pod g0-0") as err:
        pod_devices(pod, 0)
    assert field in str(err.value)


def test_the_configmap_waits_for_every_rank_then_lists_the_pods_it_was_built_from() -> None:
    workload = sts("md-g0-r1", 2)
    first = annotated("md-g0-r1-0", 0, 0)
    second = annotated("md-g0-r1-1", 1, 1)
    bare = k8s_pod("md-g0-r1-1", "a3-1", {}, labels=second["metadata"]["labels"])
    group = group_states([workload], [first, bare])[0]
    assert group_configmap(group, [first], workload) is None  # one rank's pod is missing
    assert group_configmap(group, [first, bare], workload) is None  # one rank not annotated yet
    cm = group_configmap(group, [first, second], workload)
    assert cm is not None and cm["metadata"]["name"] == "md-g0-r1-ranktable"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-md-g0-r1"  # goes with the group
    assert cm["data"][KEY_PODS] == "uid-md-g0-r1-0\nuid-md-g0-r1-1\n"
    assert json.loads(cm["data"][KEY_TABLE])["server_count"] == "2"
    # A gang restart: new pods (new UIDs) on other devices give a new table the new pods wait for.
    rebuilt = [annotated("md-g0-r1-0", 2, 0, uid="new-0"), annotated("md-g0-r1-1", 3, 1, uid="new-1")]
    again = group_configmap(group, rebuilt, workload)
    assert again is not None and again["data"][KEY_PODS] == "new-0\nnew-1\n"
    assert again["data"][KEY_TABLE] != cm["data"][KEY_TABLE]
