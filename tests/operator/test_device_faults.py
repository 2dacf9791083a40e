"""Device faults → group actions (pure): the Ascend device plugin's ConfigMap, node signals, the mapping."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from ascend_reports import RES, ascend_report
from builders import k8s_node, k8s_pod, operator_md

from supernode.api import constants as C
from supernode.api.models import ModelDeployment, Toleration
from supernode.operator.device_info import CheckCodeMismatch, DeviceInfoError, check_code, go_json, parse_device_info
from supernode.operator.fault_repair import decide_repairs
from supernode.operator.faults import UNKNOWN_DEVICE, DeviceFault, group_fault, node_signals
from supernode.operator.health_book import HealthBook
from supernode.operator.inventory import inventory_from_k8s
from supernode.operator.observe import GroupState, PodState
from supernode.operator.planner import plan


def test_check_code_matches_the_device_plugins_digest() -> None:
    # Known answer from Ascend/mind-cluster's Volcano plugin tests (fakeDeviceInfoCMDataByNode): the digest
    # the Go side computes for this DeviceInfo.
    devices = {RES: ",".join(f"Ascend910-{i}" for i in range(8)), f"{RES}-NetworkUnhealthy": "",
               f"{RES}-Unhealthy": ""}
    assert check_code(devices, 1657527526) == "6b8de396fd9945be231d24720ca66ed950baf0a5972717f335aad7571cb6457a"


def test_go_json_escapes_like_encoding_json() -> None:
    assert go_json({"b": "<&>", "a": "é\u2028"}) == '{"a":"é\\u2028","b":"\\u003c\\u0026\\u003e"}'
    body = '{"DeviceList":{"k":"\\u003cx\\u003e"},"UpdateTime":5}'
    assert check_code({"k": "<x>"}, 5) == hashlib.sha256(body.encode()).hexdigest()


def pod(name: str, node: str, chips: str | None = None) -> dict[str, Any]:
    p = k8s_pod(name, node, {RES: "8"})
    if chips is not None:
        p["metadata"]["annotations"] = {C.POD_ANNOTATION_ASCEND_REAL: chips}
    return p


FIRST_HALF = ",".join(f"Ascend910-{i}" for i in range(8))
SECOND_HALF = ",".join(f"Ascend910-{i}" for i in range(8, 16))


@pytest.mark.parametrize(("report", "chips", "action"), [
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-3", "SeparateNPU"), FIRST_HALF, "rebuild",
                 id="separate on a chip the group holds: rebuild"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-3", "SeparateNPU"), SECOND_HALF, None,
                 id="separate on a chip another pod holds: nothing"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-3", "SeparateNPU"), None, "rebuild",
                 id="separate on a node whose chip assignment is unknown: rebuild"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-3", "PreSeparateNPU"), FIRST_HALF, "drain",
                 id="pre-separate: drain at the next idle point"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-1", "RestartRequest"), FIRST_HALF, "restart",
                 id="restart request: restart in place"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-1", "RestartBusiness"), FIRST_HALF, "restart",
                 id="restart business: restart in place"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-1", "RestartNPU"), FIRST_HALF, "restart",
                 id="restart NPU: restart in place"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-1", "FreeRestartNPU"), FIRST_HALF, "restart",
                 id="free-restart NPU: restart in place"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-1", "NotHandleFault"), FIRST_HALF, None,
                 id="not-handle fault: nothing"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-1", "SeparateNPU", field="fault_level"),
                 FIRST_HALF, "rebuild", id="level given as fault_level"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-1", "PreSeparateNPU",
                                                     field="large_model_fault_level"),
                 FIRST_HALF, "drain", id="level given as large_model_fault_level"),
    pytest.param(ascend_report("n0").chips(16).unhealthy("Ascend910-2"), FIRST_HALF, "rebuild",
                 id="Unhealthy list without details: rebuild"),
    pytest.param(ascend_report("n0").chips(16).unhealthy("Ascend910-2", network=True), FIRST_HALF, "rebuild",
                 id="NetworkUnhealthy list: rebuild"),
    pytest.param(ascend_report("n0").chips(16).unhealthy("Ascend910-2").fault("Ascend910-2", "RestartBusiness"),
                 FIRST_HALF, "restart", id="a chip's Fault entry is more precise than the Unhealthy list"),
    pytest.param(ascend_report("n0").chips(16).fault("Ascend910-1", "RestartRequest")
                 .fault("Ascend910-5", "SeparateNPU", "8C1F8608,81078603"), FIRST_HALF, "rebuild",
                 id="the worst fault of the group wins"),
    pytest.param(ascend_report("n0").chips(16).node_fault(), SECOND_HALF, "rebuild",
                 id="node fault: every group on the node is rebuilt"),
    pytest.param(ascend_report("n0").chips(16).manually_separated("Ascend910-4"), FIRST_HALF, "rebuild",
                 id="manually separated chip: rebuild"),
    pytest.param(ascend_report("n0", prefix="huawei.com/npu", chip="npu").chips(16).fault("npu-3", "SeparateNPU"),
                 "npu-0,npu-3", "rebuild", id="Atlas 950 naming (huawei.com/npu-Fault, npu-N)"),
])
def test_fault_to_group_action(report: Any, chips: str | None, action: str | None) -> None:
    faults = parse_device_info(report.configmap()).faults
    decision = group_fault([pod("g0-0", "n0", chips), pod("g0-1", "n1", None)], {"n0": faults})
    assert (decision.action if decision else None) == action
    if decision:
        assert "n0" in decision.reason


@pytest.mark.parametrize(("raw", "field"), [
    ("{not json", "data.DeviceInfoCfg: not JSON"),
    ('{"DeviceInfo": [], "CheckCode": "x"}', "DeviceInfoCfg.DeviceInfo: missing or not an object"),
    ('{"DeviceInfo": {"DeviceList": {}, "UpdateTime": 1}}', "DeviceInfoCfg.CheckCode"),
    ('{"DeviceInfo": {"DeviceList": {"a": 1}, "UpdateTime": 1}, "CheckCode": "x"}', "DeviceList: not a map"),
    ('{"DeviceInfo": {"DeviceList": {}, "UpdateTime": 1.5}, "CheckCode": "x"}', "UpdateTime: not an integer"),
    ('{"DeviceInfo": {"DeviceList": {}, "UpdateTime": NaN}, "CheckCode": "x"}', "not JSON"),
])
def test_reports_that_do_not_parse_name_the_field(raw: str, field: str) -> None:
    with pytest.raises(DeviceInfoError, match=field):
        parse_device_info(ascend_report("n0").configmap(raw))


def test_bad_fault_entries_and_digests_are_refused() -> None:
    with pytest.raises(CheckCodeMismatch, match="CheckCode"):
        parse_device_info(ascend_report("n0").chips(8).tampered().configmap())
    with pytest.raises(DeviceInfoError, match=r"Ascend910-Fault\]\[0\]\.fault_handling: unknown level 'Melted'"):
        parse_device_info(ascend_report("n0").chips(8).fault("Ascend910-0", "Melted").configmap())
    report = ascend_report("n0").chips(8)
    report.faults.append({"npu_name": 3})
    with pytest.raises(DeviceInfoError, match=r"\[0\]\.npu_name: not a string"):
        parse_device_info(report.configmap())


def test_health_book_reports_bad_input_once_and_keeps_the_last_good_report() -> None:
    book = HealthBook()
    good = book.record(ascend_report("n0").chips(16).fault("Ascend910-3", "SeparateNPU").configmap())
    assert good.changed and [f.device for f in good.new] == ["Ascend910-3"] and book.version == 1
    first = book.record(ascend_report("n0").chips(16).tampered().configmap())
    again = book.record(ascend_report("n0", update_time=5).chips(16).tampered().configmap())
    garbage = book.record(ascend_report("n0").configmap("]]"))
    assert first.kind == "checkcode" and "CheckCode" in first.problem and not first.changed
    assert (again.kind, again.problem, garbage.kind, garbage.problem) == ("checkcode", "", "unparseable", "")
    assert [f.device for f in book.reported("n0")] == ["Ascend910-3"]  # ignored: the last good one stands
    cleared = book.record(ascend_report("n0", update_time=1718702999).chips(16).configmap())
    assert cleared.changed and book.reported("n0") == () and book.version == 2
    assert book.record(ascend_report("n0").configmap("]]")).problem  # bad again after a good one: reported
    assert book.remove(C.ASCEND_DEVICE_INFO_PREFIX + "n0") == "n0"


def test_node_signals_conditions_taints_and_nvidia_allocatable() -> None:
    node = k8s_node("g0", allocatable={C.RESOURCE_NVIDIA: "7"}, taints=[
        {"key": "gpu-fault", "effect": "NoExecute"}, {"key": "dedicated", "effect": "NoSchedule"}])
    node["status"]["capacity"] = {C.RESOURCE_NVIDIA: "8"}
    node["status"]["conditions"].append({"type": "NetworkUnavailable", "status": "True"})
    found = node_signals(node, conditions={"NetworkUnavailable": "rebuild"}, held={C.RESOURCE_NVIDIA: 8})
    assert [(f.device, f.source) for f in found] == [
        ("", "node condition"), ("", "node taint"), (UNKNOWN_DEVICE, "allocatable drop")]
    # The dropped GPU is an idle one (pods hold no more than is left): the planner's count handles it.
    assert [f.source for f in node_signals(node, conditions={}, held={C.RESOURCE_NVIDIA: 4})] == ["node taint"]
    tolerant = [Toleration(key="gpu-fault", operator="Exists")]
    assert node_signals(node, conditions={}, held={}, tolerations=tolerant) == []


def test_node_view_fences_only_nodes_with_separate_level_faults_and_the_planner_avoids_them() -> None:
    book = HealthBook()
    book.record(ascend_report("n0").chips(16).fault("Ascend910-3", "PreSeparateNPU").configmap())
    book.record(ascend_report("n1").chips(16).fault("Ascend910-3", "RestartBusiness").configmap())
    nodes = [k8s_node(f"n{i}", allocatable={RES: "16"}) for i in range(3)]
    view = book.node_view(nodes)
    assert view[1] is nodes[1] and view[2] is nodes[2]
    assert view[0]["spec"]["unschedulable"] is True and nodes[0]["spec"]["unschedulable"] is False
    assert book.node_view(nodes)[0] is view[0]  # cached while nothing changed
    body = operator_md().engine("vllm").accelerator("ascend-910c", 16).replicas(3).dict()
    body["spec"]["placement"] = {"tolerations": [{"operator": "Exists"}]}  # tolerates every taint
    placed = plan(ModelDeployment.from_obj(body), inventory_from_k8s(view, []))
    assert placed.capacity.placeable == 2 and {p.node for g in placed.groups for p in g.pods} == {"n1", "n2", None}


def group(index: int, pods: list[str], restarts: int = 0, draining: bool = False,
          handled: str | None = None) -> GroupState:
    notes = {C.ANNOTATION_FAULT_HANDLED: handled} if handled else {}
    return GroupState(index=index, name=f"g{index}", revision="r", kind="StatefulSet", expected_pods=len(pods),
                      pods=tuple(PodState(p, index, "r", i, True, "", "n0") for i, p in enumerate(pods)),
                      draining=draining, drain_started=None, restarts=restarts, last_restart=None, failure_seen=None,
                      supernode=None, nodes=("n0",), annotations=notes)


def test_repairs_restart_once_per_fault_then_escalate_and_leave_healthy_groups_alone() -> None:
    md = operator_md().recovery(max_group_restarts=2, backoff_seconds=1, max_backoff_seconds=4).obj()
    pods = {"a-0": pod("a-0", "n0", FIRST_HALF), "b-0": pod("b-0", "n0", SECOND_HALF)}
    restart = {"n0": (DeviceFault("n0", "Ascend910-1", "RestartBusiness", "restart", ("80E01801",)),)}
    (only,) = decide_repairs(md, [group(0, ["a-0"]), group(1, ["b-0"])], pods, restart)
    assert (only.group.index, only.action) == (0, "restart")
    digest = only.fault.digest
    assert decide_repairs(md, [group(0, ["a-0"], restarts=1, handled=digest)], pods, restart) == []
    (spent,) = decide_repairs(md, [group(0, ["a-0"], restarts=2)], pods, restart)
    assert spent.action == "rebuild"
    drain = {"n0": (DeviceFault("n0", "Ascend910-1", "PreSeparateNPU", "drain"),)}
    assert decide_repairs(md, [group(0, ["a-0"], draining=True)], pods, drain) == []
    fenced = dict(pods, **{"a-0": {**pods["a-0"], "metadata": {**pods["a-0"]["metadata"], "annotations": {
        C.ANNOTATION_DEVICE_FAULT: "rebuild: n0/Ascend910-1"}}}})
    separate = {"n0": (DeviceFault("n0", "", "NodeUnhealthy", "rebuild"),)}
    assert [r.group.index for r in decide_repairs(md, [group(0, ["a-0"]), group(1, ["b-0"])], fenced,
                                                  separate)] == [1]


def test_fault_condition_flags_extend_the_defaults_and_name_bad_values() -> None:
    from supernode.cli.operator import _fault_conditions

    assert _fault_conditions(["GpuXidError=rebuild", "NetworkUnavailable=none", "NpuHot=drain"]) == {
        "GpuXidError": "rebuild", "NpuHot": "drain"}
    with pytest.raises(ValueError, match="'Gpu=explode': expected TYPE=ACTION"):
        _fault_conditions(["Gpu=explode"])


def test_nvidia_drop_under_groups_rebuilds_the_groups_holding_gpus_on_that_node() -> None:
    book, gpu = HealthBook(), C.RESOURCE_NVIDIA
    node = k8s_node("g0", allocatable={gpu: "7"})
    node["status"]["capacity"] = {gpu: "8"}
    pods = [k8s_pod("a-0", "g0", {gpu: "4"}), k8s_pod("b-0", "g0", {gpu: "4"}), k8s_pod("cpu", "g0", {})]
    faults = book.faults_on([node], lambda: pods)
    assert [(group_fault([p], faults) or DeviceFault("", "", "", "none")).action for p in pods] == [
        "rebuild", "rebuild", "none"]
    assert book.faults_on([node], lambda: pods[:1]) == {}  # the GPU that failed was an idle one


def test_a_quiet_node_is_looked_at_again_once_it_changes() -> None:
    book = HealthBook()
    healthy = k8s_node("n0")
    assert book.faults_on([healthy], list) == {} and book.faults_on([healthy], list) == {}
    tainted = {**healthy, "spec": {"taints": [{"key": "npu-down", "effect": "NoExecute"}]}}  # its next version
    assert [f.level for f in book.faults_on([tainted], list)["n0"]] == ["taint npu-down:NoExecute"]
    assert book.node_view([tainted])[0]["spec"]["unschedulable"] is True


def test_the_node_list_is_scanned_once_and_a_new_report_still_fences_at_once() -> None:
    """The node informer hands out one list until a node changes: the planner's view of it is computed once
    per list and per version of the reports, so a device report arriving later fences its node on the next
    call, with the same list."""
    book = HealthBook()
    nodes = [k8s_node(f"n{i}", allocatable={RES: "16"}) for i in range(3)]
    view = book.node_view(nodes)
    assert book.node_view(nodes) is view and view == nodes and book.faults_on(nodes, list) == {}
    book.record(ascend_report("n2").chips(16).fault("Ascend910-1", "SeparateNPU").configmap())
    fenced = book.node_view(nodes)
    assert fenced is not view and fenced[2]["spec"]["unschedulable"] is True and fenced[0] is nodes[0]
    assert list(book.faults_on(nodes, list)) == ["n2"]
    book.remove(f"{C.ASCEND_DEVICE_INFO_PREFIX}n2")
    assert book.node_view(nodes) == nodes and book.faults_on(nodes, list) == {}


def with_gpu_health(pod: dict[str, Any], **health: str) -> dict[str, Any]:
    """The kubelet's per-device health in the pod's status (KEP-4680), as GPU UUID → health."""
    pod.setdefault("status", {})["containerStatuses"] = [{"name": "engine", "allocatedResourcesStatus": [
        {"name": C.RESOURCE_NVIDIA, "resources": [{"resourceID": uid, "health": h} for uid, h in health.items()]}]}]
    return pod


def test_pod_device_health_pins_an_nvidia_drop_to_the_group_holding_the_failed_gpu() -> None:
    book, gpu = HealthBook(), C.RESOURCE_NVIDIA
    node = k8s_node("g0", allocatable={gpu: "7"})
    node["status"]["capacity"] = {gpu: "8"}
    pods = [with_gpu_health(k8s_pod("a-0", "g0", {gpu: "4"}), **{"GPU-a0": "Healthy", "GPU-a1": "Unhealthy"}),
            with_gpu_health(k8s_pod("b-0", "g0", {gpu: "4"}), **{"GPU-b0": "Healthy", "GPU-b1": "Healthy"})]
    faults = book.faults_on([node], lambda: pods)
    hit = group_fault([pods[0]], faults)
    assert hit is not None and hit.action == "rebuild" and "g0/GPU-a1: nvidia.com/gpu Unhealthy" in hit.reason
    assert group_fault([pods[1]], faults) is None, "the group whose GPUs are all healthy stays"
    # Without the allocatable drop (seen first in the pod), the pod's own report still rebuilds its group only.
    assert (group_fault([pods[0]], {}) or DeviceFault("", "", "", "none")).action == "rebuild"
    assert group_fault([pods[1]], {}) is None
    # Unknown (the plugin re-registering) is no fault of its own, and cannot rule out the drop; nor can a pod
    # reporting nothing: both fall back to node level.
    unsure = with_gpu_health(k8s_pod("c-0", "g0", {gpu: "4"}), **{"GPU-c0": "Healthy", "GPU-c1": "Unknown"})
    assert group_fault([unsure], {}) is None
    for pod in (unsure, k8s_pod("d-0", "g0", {gpu: "4"})):
        assert (group_fault([pod], faults) or DeviceFault("", "", "", "none")).action == "rebuild"
