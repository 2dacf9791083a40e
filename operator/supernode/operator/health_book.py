"""What the operator knows about device health, node by node (no I/O; the watch handlers feed it).

Ascend reports arrive as ConfigMaps (`device_info.parse_device_info`); a report that does not parse or
whose CheckCode is wrong is ignored (the node keeps its last good report) and reported once per ConfigMap
until a good report arrives. Node conditions, taints and NVIDIA allocatable drops are read from the Node
objects themselves on every pass (`faults_on`). `node_view` gives the planner the nodes, those
fenced off for new groups marked unschedulable (in its view only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supernode.api import constants as C
from supernode.api.models import Toleration
from supernode.operator.device_info import CheckCodeMismatch, DeviceInfoError, NodeDeviceReport, parse_device_info
from supernode.operator.faults import DEFAULT_FAULT_CONDITIONS, Action, DeviceFault, fenced, node_signals
from supernode.operator.inventory import pod_usage


@dataclass(frozen=True, slots=True)
class Recorded:
    node: str
    changed: bool  # the node's faults differ from before
    new: tuple[DeviceFault, ...] = ()  # faults not in the previous report
    problem: str = ""  # why the report was ignored, the first time this content is seen
    kind: str = ""  # "checkcode" | "unparseable" when ignored


@dataclass
class HealthBook:
    conditions: Mapping[str, Action] = field(default_factory=lambda: dict(DEFAULT_FAULT_CONDITIONS))
    version: int = 0  # bumps whenever any node's reported faults change
    _reports: dict[str, NodeDeviceReport] = field(default_factory=dict)  # node -> last good report
    _rejected: set[str] = field(default_factory=set)  # ConfigMaps whose latest report was ignored (and reported)
    _views: dict[int, tuple[Mapping[str, Any], int, Mapping[str, Any]]] = field(default_factory=dict)
    # (namespace, deployment label) -> until when its pods' events reconcile it (a group is being repaired)
    _recovering: dict[tuple[str, str], float] = field(default_factory=dict)
    # id -> node version known to signal nothing; bounded: the nodes of the latest `faults_on` call
    _quiet_nodes: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    _quiet_next: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    # Per node list (the node informer hands out one list until a node changes; lists are read-only):
    # (the list, its length, positions of the nodes that signal something, position by name)
    _scan: tuple[Sequence[Mapping[str, Any]], int, tuple[int, ...], dict[str, int]] | None = None
    # (the list, its length, the book's version, the planner's view of it)
    _view: tuple[Sequence[Mapping[str, Any]], int, int, list[Mapping[str, Any]]] | None = None

    def mark_recovering(self, key: tuple[str, str], until: float) -> None:
        self._recovering[key] = until

    def recovering(self, key: tuple[str, str], now: float) -> bool:
        """Whether `key` repaired a group recently (expired entries are dropped: bounded)."""
        for stale in [k for k, until in self._recovering.items() if until < now]:
            del self._recovering[stale]
        return key in self._recovering

    def record(self, cm: Mapping[str, Any]) -> Recorded:
        name = str((cm.get("metadata") or {}).get("name") or "")
        node = name.removeprefix(C.ASCEND_DEVICE_INFO_PREFIX)
        try:
            report = parse_device_info(cm)
        except DeviceInfoError as e:
            first = name not in self._rejected  # reported once, until a good report comes in again
            self._rejected.add(name)
            kind = "checkcode" if isinstance(e, CheckCodeMismatch) else "unparseable"
            return Recorded(node, False, problem=str(e) if first else "", kind=kind)
        self._rejected.discard(name)
        before = self._reports.get(node)
        old = set(before.faults) if before else set()
        self._reports[node] = report
        changed = old != set(report.faults)
        if changed:
            self.version += 1
        return Recorded(node, changed, tuple(f for f in report.faults if f not in old))

    def remove(self, name: str) -> str | None:
        """The ConfigMap is gone (node removed, plugin uninstalled): forget its faults. Returns the node."""
        self._rejected.discard(name)
        node = name.removeprefix(C.ASCEND_DEVICE_INFO_PREFIX)
        if self._reports.pop(node, None) is None:
            return None
        self.version += 1
        return node

    def reported(self, node: str) -> tuple[DeviceFault, ...]:
        report = self._reports.get(node)
        return report.faults if report else ()

    def _scanned(self, nodes: Sequence[Mapping[str, Any]]) -> tuple[tuple[int, ...], dict[str, int]]:
        """Which nodes of this list signal something themselves, and where each name is: once per list."""
        scan = self._scan
        if scan is None or scan[0] is not nodes or scan[1] != len(nodes):
            loud = tuple(i for i, node in enumerate(nodes) if not self._quiet(node))
            where = {str((node.get("metadata") or {}).get("name") or ""): i for i, node in enumerate(nodes)}
            self._quiet_nodes, self._quiet_next = self._quiet_next, {}
            scan = self._scan = (nodes, len(nodes), loud, where)
        return scan[2], scan[3]

    def faults_on(self, nodes: Iterable[Mapping[str, Any]], pods: Callable[[], Iterable[Mapping[str, Any]]],
                  tolerations: Sequence[Toleration] = ()) -> dict[str, tuple[DeviceFault, ...]]:
        """Every known fault per node name: the device plugin's reports plus what the Node objects say.
        `pods`: all pods, read only when some node's NVIDIA allocatable dropped. Only nodes with a report or
        a signal of their own are looked at (which those are is worked out once per node list)."""
        node_list = nodes if isinstance(nodes, list | tuple) else list(nodes)
        loud, where = self._scanned(node_list)
        look = sorted({*loud, *(where[name] for name in self._reports if name in where)})
        out: dict[str, tuple[DeviceFault, ...]] = {}
        held: dict[str, dict[str, int]] | None = None
        for i in look:
            node = node_list[i]
            name = str((node.get("metadata") or {}).get("name") or "")
            status = node.get("status") or {}
            left, total = ((status.get(k) or {}).get(C.RESOURCE_NVIDIA) for k in ("allocatable", "capacity"))
            if held is None and left is not None and total is not None and left != total:
                held = _held(list(pods()))  # only when a GPU dropped out somewhere
            signals = node_signals(node, conditions=self.conditions, held=(held or {}).get(name, {}),
                                   tolerations=tolerations)
            faults = self.reported(name) + tuple(signals)
            if faults:
                out[name] = faults
        return out

    def _quiet(self, node: Mapping[str, Any], *, remember: bool = True) -> bool:
        """The Node itself signals nothing (no fault condition True, no NoExecute taint, no GPU dropped out).
        Known quiet nodes are remembered by identity (the kopf index hands out one dict per node version), so a
        pass over hundreds of healthy nodes costs a lookup each."""
        key = id(node)
        if self._quiet_nodes.get(key) is node:
            if remember:
                self._quiet_next[key] = node
            return True
        status, spec = node.get("status") or {}, node.get("spec") or {}
        left, total = ((status.get(k) or {}).get(C.RESOURCE_NVIDIA) for k in ("allocatable", "capacity"))
        quiet = left == total or left is None or total is None
        quiet = quiet and not any(t.get("effect") == "NoExecute" for t in spec.get("taints") or [])
        quiet = quiet and not any(c.get("status") == "True" and c.get("type") in self.conditions
                                  for c in status.get("conditions") or [])
        if quiet and remember:
            self._quiet_next[key] = node
        return quiet

    def node_view(self, nodes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The nodes as the planner should see them: fenced ones unschedulable (never written to the cluster; a
        cordon, unlike a taint, no toleration lets a new group past). Unchanged nodes are passed through as the
        same objects, so parse caches keep working; the same list (read-only) comes back while neither the node
        list nor the known faults changed."""
        node_list = nodes if isinstance(nodes, list | tuple) else list(nodes)
        cached = self._view
        if cached is not None and cached[0] is node_list and cached[1] == len(node_list) and cached[2] == self.version:
            return cached[3]
        loud, where = self._scanned(node_list)
        look = {*loud, *(where[name] for name in self._reports if name in where)}
        out: list[Mapping[str, Any]] = list(node_list)
        views: dict[int, tuple[Mapping[str, Any], int, Mapping[str, Any]]] = {}
        for i in look:
            node = node_list[i]
            name = str((node.get("metadata") or {}).get("name") or "")
            faults = self.reported(name) + tuple(node_signals(node, conditions=self.conditions, held={}))
            if not fenced(faults):
                continue
            old = self._views.get(id(node))
            if old is not None and old[0] is node and old[1] == self.version:
                view = old[2]
            else:
                view = {**node, "spec": {**(node.get("spec") or {}), "unschedulable": True}}
            views[id(node)] = (node, self.version, view)
            out[i] = view
        self._views = views  # bounded: the fenced nodes of the latest call
        self._view = (node_list, len(node_list), self.version, out)
        return out


def _held(pods: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for i, pod in enumerate(pods):
        node, devices, _ = pod_usage(i, pod)
        if node is not None:
            for res, n in devices.items():
                out.setdefault(node, {})[res] = out.setdefault(node, {}).get(res, 0) + n
    return out
