"""Fluent builders for test objects (cf. LeaderWorkerSet test/wrappers).

    make_md("x").replicas(2).accelerator("ascend-910c", 16).group(pods=2).obj()   # ModelDeployment
    operator_md().uid().engine("vllm").dict(); make_plan(md, [["n0", "n1"]], ["sp-0"])  # operator tests
    make_node("a3-0").superpod("sp-0").ascend(16).obj()                           # NodeInfo
    make_inventory().superpods(3, nodes=4, devices=16).add(make_node("c")).obj()   # Inventory
    k8s_node("a3-0", labels=..., allocatable=...), k8s_pod("p", "a3-0", {...})    # API dicts
"""

from __future__ import annotations

import copy
from typing import Any

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.api.supernodes import supernode_label_key
from supernode.operator.types import CapacityVerdict, GroupPlan, Inventory, NodeInfo, Plan, PodPlan, Taint


class MDBuilder:
    def __init__(self, name: str):
        self._obj: dict[str, Any] = {
            "apiVersion": C.API_VERSION,
            "kind": C.KIND,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "model": {"name": f"{name}-model", "source": "builtin://tiny"},
                "accelerator": {"type": "cpu"},
                "replicas": 1,
            },
        }
        self._parallelism_set = False

    @property
    def spec(self) -> dict[str, Any]:
        return self._obj["spec"]  # type: ignore[no-any-return]

    def namespace(self, ns: str) -> MDBuilder:
        self._obj["metadata"]["namespace"] = ns
        return self

    def uid(self, uid: str | None = None, generation: int = 1) -> MDBuilder:
        """Server-set metadata, as if read back from the API (default uid `uid-<name>`)."""
        meta = self._obj["metadata"]
        meta["uid"], meta["generation"] = uid or f"uid-{meta['name']}", generation
        return self

    def replicas(self, n: int) -> MDBuilder:
        self.spec["replicas"] = n
        return self

    def model(self, name: str, *aliases: str, source: str | None = None) -> MDBuilder:
        self.spec["model"] = {"name": name, "source": source or self.spec["model"]["source"]}
        if aliases:
            self.spec["model"]["aliases"] = list(aliases)
        return self

    def source(self, uri: str) -> MDBuilder:
        self.spec["model"]["source"] = uri
        return self

    def engine(self, type_: str, **extra: Any) -> MDBuilder:
        """`spec.engine` = {"type": type_, **extra} (camelCase keys, e.g. image=...)."""
        self.spec["engine"] = {"type": type_, **extra}
        return self

    def kv_events(self, **fields: Any) -> MDBuilder:
        """`spec.engine.kvEvents` = fields (camelCase keys, e.g. replayPort=...); call after `engine`."""
        self.spec.setdefault("engine", {})["kvEvents"] = dict(fields)
        return self

    def accelerator(self, type_: str, devices_per_pod: int = 0, resource_name: str | None = None) -> MDBuilder:
        self.spec["accelerator"] = {"type": type_, "devicesPerPod": devices_per_pod}
        if resource_name:
            self.spec["accelerator"]["resourceName"] = resource_name
        return self

    def parallelism(self, tensor: int = 1, pipeline: int = 1, data: int = 1, expert: int = 1) -> MDBuilder:
        self.spec["parallelism"] = {"tensor": tensor, "pipeline": pipeline, "data": data, "expert": expert}
        self._parallelism_set = True
        return self

    def group(self, pods: int) -> MDBuilder:
        """`pods` pods per group: tensor = devices per pod (or 1 on cpu), data = pods."""
        per_pod = self.spec["accelerator"].get("devicesPerPod", 0) or 1
        return self.parallelism(tensor=per_pod, data=pods)

    def placement(self, supernode: str | None = None, *, spread: bool | None = None,
                  label: str | None = None, **node_selector: str) -> MDBuilder:
        placement = self.spec.setdefault("placement", {})
        if supernode is not None:
            placement["supernode"] = supernode
        if spread is not None:
            placement["spreadGroups"] = spread
        if label is not None:
            placement["supernodeLabel"] = label
        if node_selector:
            placement["nodeSelector"] = node_selector
        return self

    def node_selector(self, selector: dict[str, str]) -> MDBuilder:
        self.spec.setdefault("placement", {})["nodeSelector"] = dict(selector)
        return self

    def tolerate(self, key: str | None, value: str | None = None, effect: str | None = None,
                 operator: str | None = None) -> MDBuilder:
        tol: dict[str, Any] = {"key": key, "operator": operator or ("Equal" if value is not None else "Exists")}
        if value is not None:
            tol["value"] = value
        if effect is not None:
            tol["effect"] = effect
        self.spec.setdefault("placement", {}).setdefault("tolerations", []).append(tol)
        return self

    def modes(self, *modes: str) -> MDBuilder:
        self.spec["modes"] = list(modes)
        return self

    def autoscaling(self, min_replicas: int, max_replicas: int, **extra: Any) -> MDBuilder:
        """spec.autoscaling; extra keys are camelCase (target={...}, behavior={...}, mode=, priority=, pool=)."""
        self.spec["autoscaling"] = {"minReplicas": min_replicas, "maxReplicas": max_replicas, **extra}
        return self

    def rollout(self, max_surge: int, max_unavailable: int, drain_timeout_seconds: int | None = None) -> MDBuilder:
        self.spec["rollout"] = {"maxSurge": max_surge, "maxUnavailable": max_unavailable}
        if drain_timeout_seconds is not None:
            self.spec["rollout"]["drainTimeoutSeconds"] = drain_timeout_seconds
        return self

    def recovery(self, max_group_restarts: int, backoff_seconds: int, max_backoff_seconds: int) -> MDBuilder:
        self.spec["recovery"] = {"maxGroupRestarts": max_group_restarts, "backoffSeconds": backoff_seconds,
                                 "maxBackoffSeconds": max_backoff_seconds}
        return self

    def pool(self, name: str, accelerator: str | None = None, devices_per_pod: int = 0, *,
             replicas: int | None = None, parallelism: dict[str, int] | None = None, **extra: Any) -> MDBuilder:
        """One `spec.pools` entry; what is left out is inherited (extra: camelCase fields, e.g. engine=...)."""
        entry: dict[str, Any] = {"name": name, **extra}
        if accelerator:
            entry["accelerator"] = {"type": accelerator, "devicesPerPod": devices_per_pod}
        if replicas is not None:
            entry["replicas"] = replicas
        if parallelism is not None:
            entry["parallelism"] = parallelism
        self.spec.setdefault("pools", []).append(entry)
        return self

    def set(self, path: str, value: Any) -> MDBuilder:
        """Set any field by dotted camelCase path under the object ("spec.engine.port")."""
        *parents, last = path.split(".")
        node = self._obj
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        return self

    def unset(self, path: str) -> MDBuilder:
        *parents, last = path.split(".")
        node = self._obj
        for key in parents:
            node = node[key]
        node.pop(last, None)
        return self

    def dict(self) -> dict[str, Any]:
        obj = copy.deepcopy(self._obj)
        acc = obj["spec"].get("accelerator", {})
        if not self._parallelism_set and acc.get("devicesPerPod"):
            obj["spec"]["parallelism"] = {"tensor": acc["devicesPerPod"]}
        return obj

    def obj(self) -> ModelDeployment:
        return ModelDeployment.from_obj(self.dict())


def make_md(name: str = "md") -> MDBuilder:
    return MDBuilder(name)


def operator_md(name: str = "v4-flash") -> MDBuilder:
    """The operator tests' baseline: namespace llm, a pvc:// model, no drain wait, fast gang-restart back-off."""
    return (make_md(name).namespace("llm").model("deepseek-v4-flash", source="pvc://model-cache/deepseek-v4-flash")
            .rollout(1, 0, drain_timeout_seconds=0)
            .recovery(max_group_restarts=3, backoff_seconds=1, max_backoff_seconds=4))


def make_plan(md: ModelDeployment, nodes_per_group: list[list[str]], supernodes: list[str | None] | None = None,
              resource: str | None = None, unplaced: int = 0, supernode_label: str | None = None) -> Plan:
    """A hand-made placement: group i on nodes_per_group[i] (rank r on node r), then `unplaced` unplaced groups.
    `supernode_label`: the operator-wide label the planner would have been given (the spec's rule decides)."""
    pods = md.spec.pods_per_group
    groups = []
    for i, nodes in enumerate(nodes_per_group):
        sn = supernodes[i] if supernodes else None
        groups.append(GroupPlan(index=i, placed=True, supernode=sn, pods=tuple(
            PodPlan(rank=r, role=C.ROLE_LEADER if r == 0 else C.ROLE_WORKER, node=nodes[r] if nodes else None,
                    devices=md.spec.accelerator.devices_per_pod) for r in range(pods))))
    for j in range(unplaced):
        groups.append(GroupPlan(index=len(nodes_per_group) + j, placed=False, supernode=None, pods=(),
                                reason="no free supernode"))
    return Plan(deployment=md.metadata.name, pods_per_group=pods, devices_per_pod=md.spec.accelerator.devices_per_pod,
                resource_name=resource, groups=tuple(groups),
                supernode_label=supernode_label_key(md.spec, supernode_label),
                capacity=CapacityVerdict(desired=len(groups), placeable=len(nodes_per_group),
                                         reasons=("no free supernode",) * unplaced))


class NodeBuilder:
    def __init__(self, name: str):
        self.name = name
        self.labels: dict[str, str] = {}
        self.allocatable: dict[str, int] = {}
        self.used: dict[str, int] = {}
        self.taints: list[Taint] = []
        self.ready = True
        self.unschedulable = False

    def label(self, key: str, value: str) -> NodeBuilder:
        self.labels[key] = value
        return self

    def superpod(self, sp: str, key: str = C.NODE_LABEL_ASCEND_SUPERPOD) -> NodeBuilder:
        return self.label(key, sp)

    def clique(self, clique: str) -> NodeBuilder:
        return self.label(C.NODE_LABEL_NVIDIA_CLIQUE, clique)

    def devices(self, resource: str, count: int, used: int = 0) -> NodeBuilder:
        self.allocatable[resource] = count
        if used:
            self.used[resource] = used
        return self

    def ascend(self, count: int = 16, used: int = 0) -> NodeBuilder:
        return self.devices(C.RESOURCE_ASCEND, count, used)

    def nvidia(self, count: int = 8, used: int = 0, product: str | None = None) -> NodeBuilder:
        if product:
            self.label(C.NODE_LABEL_NVIDIA_PRODUCT, product)
        return self.devices(C.RESOURCE_NVIDIA, count, used)

    def taint(self, key: str, value: str | None = None, effect: str = "NoSchedule") -> NodeBuilder:
        self.taints.append(Taint(key=key, value=value, effect=effect))
        return self

    def not_ready(self) -> NodeBuilder:
        self.ready = False
        return self

    def cordoned(self) -> NodeBuilder:
        self.unschedulable = True
        return self

    def obj(self) -> NodeInfo:
        return NodeInfo(name=self.name, labels=dict(self.labels), allocatable=dict(self.allocatable),
                        used=dict(self.used), taints=tuple(self.taints), ready=self.ready,
                        unschedulable=self.unschedulable)


def make_node(name: str) -> NodeBuilder:
    return NodeBuilder(name)


class InventoryBuilder:
    def __init__(self) -> None:
        self._nodes: list[NodeInfo] = []

    def add(self, *nodes: NodeBuilder | NodeInfo) -> InventoryBuilder:
        self._nodes.extend(n.obj() if isinstance(n, NodeBuilder) else n for n in nodes)
        return self

    def superpods(self, count: int, nodes: int = 4, devices: int = 16, prefix: str = "sp-") -> InventoryBuilder:
        """`count` Ascend SuperPoDs `{prefix}{s}` of `nodes` nodes `{prefix}{s}-n{i}` with `devices` NPUs."""
        for s in range(count):
            for i in range(nodes):
                self.add(make_node(f"{prefix}{s}-n{i}").superpod(f"{prefix}{s}").ascend(devices))
        return self

    def cpu_nodes(self, count: int, prefix: str = "cpu-") -> InventoryBuilder:
        return self.add(*(make_node(f"{prefix}{i}") for i in range(count)))

    def obj(self) -> Inventory:
        return Inventory(nodes=tuple(self._nodes))


def make_inventory() -> InventoryBuilder:
    return InventoryBuilder()


def k8s_node(name: str, *, labels: dict[str, Any] | None = None, allocatable: dict[str, Any] | None = None,
             taints: list[dict[str, Any]] | None = None, ready: bool = True,
             unschedulable: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": "192", "memory": "1500Gi", "pods": "110", **(allocatable or {})},
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def k8s_pod(name: str, node: str | None, devices: dict[str, Any], *, labels: dict[str, str] | None = None,
            namespace: str = "default", phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [
            {"name": "main", "resources": {"limits": dict(devices), "requests": {"cpu": "1", **devices}}}]},
        "status": {"phase": phase},
    }
