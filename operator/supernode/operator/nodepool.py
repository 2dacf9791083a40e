"""Which nodes a ModelDeployment may use, what supernode each belongs to, and how much room is left.

Pure helpers for the planner: node eligibility (readiness, cordons, nodeSelector, taints,
accelerator resource and product) and a free-capacity index per supernode, kept up to date as
pods are placed so choosing a supernode costs O(supernodes), not O(nodes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from supernode.api import constants as C
from supernode.api.models import AcceleratorType, ModelDeploymentSpec, Toleration
from supernode.operator.types import NodeInfo, Taint

UNBOUNDED = 1 << 30  # pods a node can take when pods need no devices (cpu)
_NOSCHEDULE_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def resource_name(spec: ModelDeploymentSpec) -> str | None:
    """Extended resource each pod requests; None for cpu."""
    acc = spec.accelerator
    if acc.type.vendor == "cpu":
        return None
    if acc.resource_name:
        return acc.resource_name
    return C.RESOURCE_ASCEND if acc.type.vendor == "ascend" else C.RESOURCE_NVIDIA


def supernode_label_key(spec: ModelDeploymentSpec, operator_default: str | None = None) -> str | None:
    """Node label holding the supernode id: spec override, else the operator's Ascend label, else per vendor."""
    vendor = spec.accelerator.type.vendor
    if vendor == "cpu":
        return None
    if spec.placement.supernode_label:
        return spec.placement.supernode_label
    if vendor == "ascend":
        return operator_default or C.NODE_LABEL_ASCEND_SUPERPOD
    return C.NODE_LABEL_NVIDIA_CLIQUE


def tolerates(tolerations: Sequence[Toleration], taint: Taint) -> bool:
    """Kubernetes toleration semantics for one taint."""
    for tol in tolerations:
        if tol.effect is not None and tol.effect != taint.effect:
            continue
        if tol.operator == "Exists":
            if not tol.key or tol.key == taint.key:
                return True
        elif tol.key == taint.key and (tol.value or "") == (taint.value or ""):
            return True
    return False


def _product_mismatch(node: NodeInfo, acc_type: AcceleratorType) -> str | None:
    # Only NVIDIA: GPU feature discovery names products consistently (NVIDIA-H200...); Ascend chip
    # names vary by device plugin, so nodeSelector is the tool there.
    if acc_type.vendor != "nvidia":
        return None
    product = node.labels.get(C.NODE_LABEL_NVIDIA_PRODUCT)
    token = acc_type.value.split("-", 1)[1].upper()
    if product is None or token in product.upper():
        return None
    return f"{C.NODE_LABEL_NVIDIA_PRODUCT}={product} is not {acc_type.value}"


def exclusion(node: NodeInfo, spec: ModelDeploymentSpec, resource: str | None) -> str | None:
    """Why `node` cannot take new pods of this deployment, or None when it can."""
    if not node.ready:
        return "not ready"
    if node.unschedulable:
        return "cordoned"
    for key, value in spec.placement.node_selector.items():
        if node.labels.get(key) != value:
            return f"nodeSelector {key}={value} not matched"
    for taint in node.taints:
        if taint.effect in _NOSCHEDULE_EFFECTS and not tolerates(spec.placement.tolerations, taint):
            return f"taint {taint.key}{'=' + taint.value if taint.value else ''}:{taint.effect} not tolerated"
    if resource is not None and node.allocatable.get(resource, 0) <= 0:
        return f"no {resource}"
    return _product_mismatch(node, spec.accelerator.type)


def summarize_exclusions(reasons: Mapping[str, str], total: int) -> str | None:
    if not reasons:
        return None
    counts = Counter(reasons.values())
    parts = ", ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{len(reasons)} of {total} nodes excluded: {parts}"


@dataclass(slots=True)
class Domain:
    """A set of nodes a group may span under Required: one supernode, or one unlabelled node."""

    key: str  # supernode id, or "node/<name>" for a node without a supernode label
    supernode: str | None
    nodes: list[str]  # sorted node names
    room: int = 0  # pods this domain can still take (sum over nodes)


class CapacityIndex:
    """Free devices per node and free pod room per domain, updated as pods are placed."""

    def __init__(
        self, nodes: Iterable[NodeInfo], eligible: set[str], label_key: str | None, resource: str | None,
        per_pod: int,
    ):
        """`nodes`: every known node (kept groups may sit on any); domains hold only `eligible` ones."""
        self.per_pod = per_pod
        self.resource = resource
        self.free: dict[str, int] = {}
        self.supernode_of: dict[str, str | None] = {}
        self.domains: dict[str, Domain] = {}
        self.domain_of: dict[str, str] = {}
        for node in sorted(nodes, key=lambda n: n.name):
            sn = node.labels.get(label_key) if label_key else None
            key = sn if sn else f"node/{node.name}"
            self.supernode_of[node.name] = sn or None
            self.free[node.name] = self._free_devices(node)
            if node.name not in eligible:
                continue
            domain = self.domains.setdefault(key, Domain(key=key, supernode=sn or None, nodes=[]))
            domain.nodes.append(node.name)
            self.domain_of[node.name] = key
        for domain in self.domains.values():
            domain.room = sum(self.room(n) for n in domain.nodes)

    def _free_devices(self, node: NodeInfo) -> int:
        if self.resource is None:
            return UNBOUNDED
        return max(0, node.allocatable.get(self.resource, 0) - node.used.get(self.resource, 0))

    def room(self, node: str) -> int:
        """Pods of this deployment `node` can still take."""
        if self.per_pod == 0:
            return UNBOUNDED if node in self.free else 0
        return self.free.get(node, 0) // self.per_pod

    def take(self, node: str, pods: int) -> None:
        domain = self.domains.get(self.domain_of.get(node, ""))
        if domain is not None:
            domain.room -= self.room(node)
        if self.per_pod:
            self.free[node] -= pods * self.per_pod
        if domain is not None:
            domain.room += self.room(node)
