"""Build a planner `Inventory` from plain data: our inventory YAML, or Kubernetes Node + Pod dicts.

Pure (no I/O: callers read files or list objects). Tolerant: a malformed node, label, taint or
quantity is skipped and the reason recorded in `Inventory.skipped`; loading never raises on bad
entries. Only a document that is not an inventory at all raises `InventoryError`.

Inventory YAML (docs/planner.md):

    kind: Inventory                # optional
    nodes:
    - name: a3-0
      labels: {huawei.com/superpod-id: sp-0}
      allocatable: {huawei.com/Ascend910: 16}
      used: {huawei.com/Ascend910: 0}         # devices held by other workloads
      taints: [{key: dedicated, value: llm, effect: NoSchedule}]
      ready: true
      unschedulable: false
    pools:                         # shorthand: `count` alike nodes named namePrefix + 0..count-1
    - {namePrefix: sp-1-node-, count: 4, labels: {...}, allocatable: {...}}

A `kind: List` of Node (and Pod) objects, as `kubectl get nodes,pods -A -o yaml` prints, works too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from supernode.api import constants as C
from supernode.operator.types import Inventory, NodeInfo, Taint

_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})
_QUANTITY = re.compile(r"^(\d+)(k|M|G|T|Ki|Mi|Gi|Ti)?$")
_SUFFIX = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
MAX_POOL_COUNT = 100_000
_NODE_FIELDS = frozenset({"name", "labels", "allocatable", "used", "taints", "ready", "unschedulable",
                          "namePrefix", "count"})


class InventoryError(ValueError):
    """The document is not an inventory at all."""


def parse_device_quantity(value: Any) -> int | None:
    """A whole, non-negative device count from a Kubernetes quantity ("16", 16, "1k"); None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value >= 0 and value.is_integer() else None
    match = _QUANTITY.match(str(value).strip()) if isinstance(value, str) else None
    return int(match.group(1)) * _SUFFIX[match.group(2)] if match else None


def _labels(raw: Any, where: str, skipped: list[str]) -> dict[str, str] | None:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        skipped.append(f"{where}: labels is not a mapping; node skipped")
        return None
    labels: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            labels[str(key)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            labels[str(key)] = str(value)
        else:
            skipped.append(f"{where}: label {key!s} has a {type(value).__name__} value; label ignored")
    return labels


def _resources(raw: Any, where: str, field: str, skipped: list[str], *, extended_only: bool) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        skipped.append(f"{where}: {field} is not a mapping; ignored")
        return {}
    out: dict[str, int] = {}
    for key, value in raw.items():
        name = str(key)
        if extended_only and "/" not in name:
            continue  # cpu, memory, pods...: the planner counts devices only
        count = parse_device_quantity(value)
        if count is None:
            skipped.append(f"{where}: {field} {name}={value!r} is not a whole device count; ignored")
            continue
        out[name] = count
    return out


def _taints(raw: Any, where: str, skipped: list[str]) -> tuple[Taint, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        skipped.append(f"{where}: taints is not a list; ignored")
        return ()
    taints: list[Taint] = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            skipped.append(f"{where}: taint {item!r} has no key; ignored")
            continue
        effect = item.get("effect", "NoSchedule")
        if effect not in _EFFECTS:
            skipped.append(f"{where}: taint {item['key']} has unknown effect {effect!r}; ignored")
            continue
        value = item.get("value")
        taints.append(Taint(key=item["key"], value=None if value is None else str(value), effect=effect))
    return tuple(taints)


def _node_from_entry(entry: Any, where: str, skipped: list[str], name: str | None = None) -> NodeInfo | None:
    if not isinstance(entry, Mapping):
        skipped.append(f"{where}: not a mapping; skipped")
        return None
    name = name if name is not None else entry.get("name")
    if not isinstance(name, str) or not name:
        skipped.append(f"{where}: node has no name; skipped")
        return None
    where = f"node {name}"
    for key in sorted(set(map(str, entry)) - _NODE_FIELDS):
        skipped.append(f"{where}: unknown field {key!r} ignored")
    labels = _labels(entry.get("labels"), where, skipped)
    if labels is None:
        return None
    return NodeInfo(
        name=name, labels=labels,
        allocatable=_resources(entry.get("allocatable"), where, "allocatable", skipped, extended_only=False),
        used=_resources(entry.get("used"), where, "used", skipped, extended_only=False),
        taints=_taints(entry.get("taints"), where, skipped),
        ready=entry.get("ready", True) is not False, unschedulable=entry.get("unschedulable", False) is True,
    )


def inventory_from_dict(doc: Any) -> Inventory:
    """Our inventory format (or a Kubernetes List of Nodes/Pods) as already-parsed YAML."""
    if not isinstance(doc, Mapping):
        raise InventoryError("an inventory is a mapping with `nodes:` (and/or `pools:`), or a Kubernetes List")
    if doc.get("kind") == "List" or "items" in doc:
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise InventoryError("items: must be a list of Node (and Pod) objects")
        nodes = [i for i in items if isinstance(i, Mapping) and i.get("kind") == "Node"]
        pods = [i for i in items if isinstance(i, Mapping) and i.get("kind") == "Pod"]
        return inventory_from_k8s(nodes, pods)
    if "nodes" not in doc and "pools" not in doc:
        raise InventoryError("an inventory needs `nodes:` or `pools:`")
    skipped: list[str] = []
    nodes_out: list[NodeInfo] = []
    raw_nodes = doc.get("nodes") or []
    if not isinstance(raw_nodes, list):
        raise InventoryError("nodes: must be a list")
    for i, entry in enumerate(raw_nodes):
        if (node := _node_from_entry(entry, f"nodes[{i}]", skipped)) is not None:
            nodes_out.append(node)
    raw_pools = doc.get("pools") or []
    if not isinstance(raw_pools, list):
        raise InventoryError("pools: must be a list")
    for i, pool in enumerate(raw_pools):
        count, prefix = (pool.get("count"), pool.get("namePrefix")) if isinstance(pool, Mapping) else (None, None)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_POOL_COUNT \
                or not isinstance(prefix, str) or not prefix:
            skipped.append(f"pools[{i}]: needs namePrefix (string) and count (0..{MAX_POOL_COUNT}); skipped")
            continue
        for j in range(count):
            if (node := _node_from_entry(pool, f"pools[{i}]", skipped, name=f"{prefix}{j}")) is not None:
                nodes_out.append(node)
    return _dedupe(nodes_out, skipped)


def _dedupe(nodes: list[NodeInfo], skipped: list[str]) -> Inventory:
    seen: dict[str, NodeInfo] = {}
    for node in nodes:
        if node.name in seen:
            skipped.append(f"node {node.name}: duplicate name; later entry skipped")
            continue
        seen[node.name] = node
    return Inventory(nodes=tuple(seen.values()), skipped=tuple(skipped))


def _k8s_ready(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions")
    for cond in conditions if isinstance(conditions, list) else []:
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False  # no Ready condition: not known to be ready


def _pod_devices(pod: Mapping[str, Any], where: str, skipped: list[str]) -> dict[str, int]:
    """Extended resources a pod holds: max(sum over containers, any init container), per resource."""
    spec = pod.get("spec") or {}

    def per_container(container: Any) -> dict[str, int]:
        res = (container.get("resources") or {}) if isinstance(container, Mapping) else {}
        if not isinstance(res, Mapping):
            skipped.append(f"{where}: resources is not a mapping; ignored")
            return {}
        limits = _resources(res.get("limits"), where, "limits", skipped, extended_only=True)
        requests = _resources(res.get("requests"), where, "requests", skipped, extended_only=True)
        return {k: max(limits.get(k, 0), requests.get(k, 0)) for k in {*limits, *requests}}

    total: dict[str, int] = {}
    for container in spec.get("containers") or []:
        for k, v in per_container(container).items():
            total[k] = total.get(k, 0) + v
    for container in spec.get("initContainers") or []:
        for k, v in per_container(container).items():
            total[k] = max(total.get(k, 0), v)
    return total


PodUsage = tuple[str | None, dict[str, int], list[str]]  # (node it holds devices on, devices, skipped notes)
NodeBase = tuple[NodeInfo | None, list[str]]  # (the node without `used`, skipped notes)


def pod_usage(i: int, pod: Any, exclude_deployment: str | None = None, namespace: str | None = None) -> PodUsage:
    """The devices one pod (`pods[i]`) holds and on which node; (None, {}, notes) when it holds none."""
    skipped: list[str] = []
    if not isinstance(pod, Mapping):
        return None, {}, [f"pods[{i}]: not a mapping; skipped"]
    meta, status, spec = (pod.get(k) or {} for k in ("metadata", "status", "spec"))
    if not all(isinstance(x, Mapping) for x in (meta, status, spec)):
        return None, {}, [f"pods[{i}]: metadata/spec/status are not mappings; skipped"]
    node_name = spec.get("nodeName")
    if not node_name or status.get("phase") in _TERMINAL_PHASES:
        return None, {}, []
    labels = meta.get("labels") or {}
    if exclude_deployment and isinstance(labels, Mapping) \
            and labels.get(C.LABEL_DEPLOYMENT) == exclude_deployment \
            and (namespace is None or meta.get("namespace") == namespace):
        return None, {}, []
    where = f"pod {meta.get('namespace')}/{meta.get('name')}"
    try:
        devices = _pod_devices(pod, where, skipped)
    except (AttributeError, TypeError, ValueError) as exc:  # malformed shape deep inside
        return None, {}, [*skipped, f"{where}: malformed ({exc}); its devices are not counted"]
    return str(node_name), devices, skipped


def node_base(i: int, obj: Any) -> NodeBase:
    """One Node object (`nodes[i]`) as the planner sees it, before other pods' usage is added."""
    skipped: list[str] = []
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return None, [f"nodes[{i}]: no metadata; skipped"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not isinstance(spec, Mapping) or not isinstance(status, Mapping):
        return None, [f"nodes[{i}]: spec/status are not mappings; skipped"]
    entry = {
        "name": meta.get("name"), "labels": meta.get("labels"), "taints": spec.get("taints"),
        "unschedulable": spec.get("unschedulable", False), "ready": _k8s_ready(status),
    }
    node = _node_from_entry(entry, f"nodes[{i}]", skipped)
    if node is None:
        return None, skipped
    allocatable = _resources(status.get("allocatable"), f"node {node.name}", "allocatable", skipped,
                             extended_only=True)
    return NodeInfo(name=node.name, labels=node.labels, allocatable=allocatable, taints=node.taints,
                    ready=node.ready, unschedulable=node.unschedulable), skipped


def with_used(node: NodeInfo, used: dict[str, int]) -> NodeInfo:
    return NodeInfo(name=node.name, labels=node.labels, allocatable=node.allocatable, used=used, taints=node.taints,
                    ready=node.ready, unschedulable=node.unschedulable)


def assemble(nodes: Iterable[NodeBase], pods: Iterable[PodUsage], *,
             combine: Callable[[NodeInfo, dict[str, int]], NodeInfo] = with_used) -> Inventory:
    """Nodes with the devices the pods hold on them (`combine`: a node plus its usage, e.g. memoized)."""
    skipped: list[str] = []
    used: dict[str, dict[str, int]] = {}
    for node_name, devices, notes in pods:
        skipped += notes
        if node_name is not None:
            held = used.setdefault(node_name, {})
            for k, v in devices.items():
                held[k] = held.get(k, 0) + v
    out: list[NodeInfo] = []
    for node, notes in nodes:
        skipped += notes
        if node is not None:
            on_node = used.get(node.name)
            out.append(combine(node, on_node) if on_node else node)
    return _dedupe(out, skipped)


def inventory_from_k8s(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    exclude_deployment: str | None = None,
    *,
    namespace: str | None = None,
) -> Inventory:
    """Nodes + pods as the Kubernetes API returns them (dicts). Pods of `exclude_deployment`
    (label supernode.io/deployment, in `namespace` when given) are not counted as used: the
    planner is re-placing exactly those."""
    return assemble((node_base(i, n) for i, n in enumerate(nodes)),
                    [pod_usage(i, p, exclude_deployment, namespace) for i, p in enumerate(pods)])
