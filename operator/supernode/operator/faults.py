"""Device faults → one action per replica group (pure).

Inputs are `DeviceFault`s: per chip from the Ascend device plugin's ConfigMap (`device_info.py`), per node
from node conditions, NoExecute taints and NVIDIA allocatable drops (`node_signals`), per pod from the
device health the kubelet writes into the pod's status (`pod_signals`, KEP-4680). Each fault maps to
an action; a group takes the most severe action of the faults that touch one of its pods:

| action    | from                                                                 | what the executor does         |
|-----------|----------------------------------------------------------------------|--------------------------------|
| `rebuild` | SeparateNPU, ManuallySeparateNPU, Unhealthy lists, node-wide faults, | fence, delete, re-place group  |
|           | a device the pod's status reports Unhealthy                          |                                |
| `drain`   | PreSeparateNPU                                                       | fence, drain, replace when idle |
| `restart` | RestartRequest, RestartBusiness, RestartNPU, FreeRestartNPU          | fence, gang restart in place   |
| `none`    | NotHandleFault                                                       | nothing                        |

A fault touches a pod when it is node-wide, or names a chip the pod holds (the device plugin's
`huawei.com/AscendReal` pod annotation), or names a chip on a pod whose chips are unknown. An NVIDIA
allocatable drop (which GPU is not said) touches the pods holding devices there, narrowed to those whose
status reports an unhealthy GPU when the kubelet reports per-device health. Nodes with a
drain- or rebuild-level fault are fenced off for new groups (`fenced`), so a rebuilt group never lands
on the same failing device and an unknown chip assignment cannot loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from supernode.api import constants as C
from supernode.api.models import Toleration
from supernode.operator.nodepool import tolerates
from supernode.operator.types import Taint

Action = Literal["none", "restart", "drain", "rebuild"]
SEVERITY: dict[Action, int] = {"none": 0, "restart": 1, "drain": 2, "rebuild": 3}
UNKNOWN_DEVICE = "*"  # a device on the node failed, which one is not known (NVIDIA allocatable drop)

# Fault handling levels of the Ascend device plugin (`fault_handling`, same values as `fault_level` and
# `large_model_fault_level`); MindCluster 26 shortens some of them in switch info.
LEVEL_ACTIONS: dict[str, Action] = {
    "NotHandleFault": "none", "NotHandle": "none",
    "RestartRequest": "restart", "RestartBusiness": "restart", "RestartNPU": "restart", "FreeRestartNPU": "restart",
    "PreSeparateNPU": "drain", "PreSeparate": "drain",
    "SeparateNPU": "rebuild", "Separate": "rebuild", "ManuallySeparateNPU": "rebuild",
}
# Node conditions that mean the node's devices cannot serve, when True (operator-configurable).
DEFAULT_FAULT_CONDITIONS: dict[str, Action] = {"NetworkUnavailable": "rebuild"}


@dataclass(frozen=True, slots=True)
class DeviceFault:
    node: str
    device: str  # chip name (Ascend910-3), "" = the whole node, UNKNOWN_DEVICE = some device on it
    level: str  # the plugin's level, or the condition / taint / signal that reported it
    action: Action
    codes: tuple[str, ...] = ()  # fault codes (hex), when the plugin gives them
    source: str = ""  # which input reported it
    since: int | None = None  # unix time the fault began, when known

    def describe(self) -> str:
        where = self.node if not self.device else f"{self.node}/{self.device}"
        codes = f" code {','.join(self.codes)}" if self.codes else ""
        return f"{where}: {self.level}{codes} ({self.source})"


@dataclass(frozen=True, slots=True)
class GroupFault:
    action: Action
    reason: str
    faults: tuple[DeviceFault, ...]

    @property
    def digest(self) -> str:
        """Identifies these faults (not when they were last reported): a restart happens once per fault."""
        parts = sorted(f"{f.node}|{f.device}|{f.level}|{','.join(f.codes)}|{f.since}" for f in self.faults)
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def worst(actions: Iterable[Action]) -> Action:
    return max(actions, key=SEVERITY.__getitem__, default="none")


def fenced(faults: Iterable[DeviceFault]) -> bool:
    """New groups stay off a node with a drain- or rebuild-level fault."""
    return any(SEVERITY[f.action] >= SEVERITY["drain"] and f.device != UNKNOWN_DEVICE for f in faults)


def node_signals(node: Mapping[str, Any], *, conditions: Mapping[str, Action], held: Mapping[str, int],
                 tolerations: Sequence[Toleration] = ()) -> list[DeviceFault]:
    """Faults a Node object reports itself: a configured condition True, a NoExecute taint the groups do not
    tolerate, or an NVIDIA device dropped from allocatable while pods hold more than is left (`held`: devices
    the node's pods hold per resource)."""
    name = str((node.get("metadata") or {}).get("name") or "")
    status, spec = node.get("status") or {}, node.get("spec") or {}
    out: list[DeviceFault] = []
    for cond in status.get("conditions") or []:
        action = conditions.get(str(cond.get("type")))
        if action and cond.get("status") == "True":
            out.append(DeviceFault(name, "", f"condition {cond['type']}", action, source="node condition"))
    for taint in spec.get("taints") or []:
        value = taint.get("value")
        if taint.get("effect") == "NoExecute" and not tolerates(tolerations, Taint(
                str(taint.get("key")), None if value is None else str(value), "NoExecute")):
            out.append(DeviceFault(name, "", f"taint {taint.get('key')}:NoExecute", "rebuild", source="node taint"))
    allocatable, capacity = status.get("allocatable") or {}, status.get("capacity") or {}
    res = C.RESOURCE_NVIDIA
    if res in allocatable and res in capacity and str(allocatable[res]).isdigit() and str(capacity[res]).isdigit():
        left = int(allocatable[res])
        if left < int(capacity[res]) and held.get(res, 0) > left:
            out.append(DeviceFault(name, UNKNOWN_DEVICE, f"{res} allocatable {left}/{capacity[res]}", "rebuild",
                                   source="allocatable drop"))
    return out


def pod_chips(pod: Mapping[str, Any]) -> frozenset[str] | None:
    """The chips the Ascend device plugin gave a pod; None when it does not say."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(C.POD_ANNOTATION_ASCEND_REAL)
    if not raw:
        return None
    return frozenset(c.strip() for c in str(raw).split(",") if c.strip())


def _holds_devices(pod: Mapping[str, Any]) -> bool:
    for container in (pod.get("spec") or {}).get("containers") or []:
        res = container.get("resources") or {}
        if any("/" in str(k) for part in ("limits", "requests") for k in (res.get(part) or {})):
            return True
    return False


def device_health(pod: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Per resource name, the health the kubelet reports for each device the pod was given (resource ID →
    Healthy | Unhealthy | Unknown): `status.containerStatuses[].allocatedResourcesStatus`, KEP-4680
    (alpha in Kubernetes 1.31 behind ResourceHealthStatus, beta from 1.36), filled from the device
    plugin's own per-device health (the NVIDIA plugin marks a GPU Unhealthy on a fatal XID). Empty when the
    cluster does not report it."""
    out: dict[str, dict[str, str]] = {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for entry in (e for c in statuses for e in (c.get("allocatedResourcesStatus") or [])):
        per = out.setdefault(str(entry.get("name") or ""), {})
        for res in entry.get("resources") or []:
            if res.get("resourceID"):
                per[str(res["resourceID"])] = str(res.get("health") or "Unknown")
    return out


POD_HEALTH = "pod device health"  # DeviceFault.source of the faults read from a pod's own status


def pod_signals(pod: Mapping[str, Any]) -> list[DeviceFault]:
    """Devices the kubelet reports Unhealthy in the pod's own status: a fault of this pod's group only
    (Unknown, e.g. while the plugin re-registers, is not acted on)."""
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    return [DeviceFault(node, device, f"{name} Unhealthy", "rebuild", source=POD_HEALTH)
            for name, devices in sorted(device_health(pod).items()) for device, health in sorted(devices.items())
            if health == "Unhealthy"]


def touches(fault: DeviceFault, pod: Mapping[str, Any]) -> bool:
    if fault.device == "":
        return True
    if fault.device == UNKNOWN_DEVICE:
        # A GPU dropped out of allocatable: a pod whose status reports every GPU of its own Healthy is not
        # hit; one reporting an Unhealthy GPU is; otherwise (nothing reported, Unknown) any pod holding
        # devices there may be.
        reported = set(device_health(pod).get(C.RESOURCE_NVIDIA, {}).values())
        if reported == {"Healthy"}:
            return False
        return "Unhealthy" in reported or _holds_devices(pod)
    chips = pod_chips(pod)
    return chips is None or fault.device in chips


def group_fault(pods: Iterable[Mapping[str, Any]], faults_on: Mapping[str, Sequence[DeviceFault]],
                max_reasons: int = 3) -> GroupFault | None:
    """The action one group needs for the faults touching its pods (None: nothing to do)."""
    hits: list[DeviceFault] = []
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        for fault in faults_on.get(str(node), ()) if node else ():
            if fault.action != "none" and fault not in hits and touches(fault, pod):
                hits.append(fault)
        hits += [f for f in pod_signals(pod) if f not in hits]
    if not hits:
        return None
    action = worst(f.action for f in hits)
    top = [f for f in hits if f.action == action]
    reason = "; ".join(f.describe() for f in top[:max_reasons]) + (
        f" (+{len(top) - max_reasons} more)" if len(top) > max_reasons else "")
    return GroupFault(action, reason, tuple(top))
