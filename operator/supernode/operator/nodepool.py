"""Which nodes a ModelDeployment may use, what supernode each belongs to, and how much room is left.

Pure helpers for the planner: node eligibility (readiness, cordons, nodeSelector, taints,
accelerator resource and product) and a free-capacity index per supernode, kept up to date as
pods are placed so choosing a supernode costs O(supernodes), not O(nodes).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
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


def _product_token(acc_type: AcceleratorType) -> str | None:
    # Only NVIDIA: GPU feature discovery names products consistently (NVIDIA-H200...); Ascend chip
    # names vary by device plugin, so nodeSelector is the tool there.
    return acc_type.value.split("-", 1)[1].upper() if acc_type.vendor == "nvidia" else None


def node_filter(spec: ModelDeploymentSpec, resource: str | None) -> Callable[[NodeInfo], str | None]:
    """A function telling why a node cannot take new pods of this deployment (None when it can).
    Spec-derived values are computed once, not per node."""
    selector = tuple(spec.placement.node_selector.items())
    tolerations = tuple(spec.placement.tolerations)
    token = _product_token(spec.accelerator.type)
    acc_name = spec.accelerator.type.value

    def why_not(node: NodeInfo) -> str | None:
        if not node.ready:
            return "not ready"
        if node.unschedulable:
            return "cordoned"
        labels = node.labels
        for key, value in selector:
            if labels.get(key) != value:
                return f"nodeSelector {key}={value} not matched"
        for taint in node.taints:
            if taint.effect in _NOSCHEDULE_EFFECTS and not tolerates(tolerations, taint):
                return f"taint {taint.key}{'=' + taint.value if taint.value else ''}:{taint.effect} not tolerated"
        if resource is not None and node.allocatable.get(resource, 0) <= 0:
            return f"no {resource}"
        if token is not None:
            product = labels.get(C.NODE_LABEL_NVIDIA_PRODUCT)
            if product is not None and token not in product.upper():
                return f"{C.NODE_LABEL_NVIDIA_PRODUCT}={product} is not {acc_name}"
        return None

    return why_not


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
        self, nodes: Iterable[NodeInfo], eligible: set[str] | Container[str], label_key: str | None,
        resource: str | None, per_pod: int,
    ):
        """`nodes`: every known node (kept groups may sit on any); domains hold only `eligible` ones."""
        self.per_pod = per_pod
        self.resource = resource
        self.label_key = label_key
        self.free: dict[str, int] = {}
        self.supernode_of: dict[str, str | None] = {}
        self.domains: dict[str, Domain] = {}
        self.domain_of: dict[str, str] = {}
        self._owned: set[str] | None = None  # a fork: the domains it copied (others are shared, read-only)
        for node in nodes:
            self.add(node, node.name in eligible, sort=False)
        for domain in self.domains.values():
            domain.nodes.sort()

    def add(self, node: NodeInfo, eligible: bool, *, sort: bool = True) -> None:
        """One more node (its name not indexed yet)."""
        name, resource = node.name, self.resource
        free = UNBOUNDED if resource is None else max(0, node.allocatable.get(resource, 0) - node.used.get(resource, 0))
        self.free[name] = free
        sn = (node.labels.get(self.label_key) or None) if self.label_key else None
        self.supernode_of[name] = sn
        if not eligible:
            return
        key = sn if sn else f"node/{name}"
        domain = self._domain(key)
        if domain is None:
            domain = self.domains[key] = Domain(key=key, supernode=sn, nodes=[])
            if self._owned is not None:
                self._owned.add(key)
        if sort:
            bisect.insort(domain.nodes, name)
        else:
            domain.nodes.append(name)
        domain.room += free // self.per_pod if self.per_pod else UNBOUNDED
        self.domain_of[name] = key

    def remove(self, name: str) -> None:
        """Forget a node (`add` it again with what changed)."""
        key = self.domain_of.pop(name, None)
        domain = self._domain(key) if key is not None else None
        if domain is not None:
            domain.room -= self.free[name] // self.per_pod if self.per_pod else UNBOUNDED
            domain.nodes.remove(name)
            if not domain.nodes:
                del self.domains[domain.key]
        self.free.pop(name, None)
        self.supernode_of.pop(name, None)

    def fork(self) -> CapacityIndex:
        """A copy to place pods on; this index is left as it is (domains are copied when first changed)."""
        out = CapacityIndex.__new__(CapacityIndex)
        out.per_pod, out.resource, out.label_key = self.per_pod, self.resource, self.label_key
        out.free, out.supernode_of = dict(self.free), dict(self.supernode_of)
        out.domains, out.domain_of = dict(self.domains), dict(self.domain_of)
        out._owned = set()
        return out

    def _domain(self, key: str) -> Domain | None:
        domain = self.domains.get(key)
        if domain is not None and self._owned is not None and key not in self._owned:
            domain = self.domains[key] = Domain(domain.key, domain.supernode, list(domain.nodes), domain.room)
            self._owned.add(key)
        return domain

    def room(self, node: str) -> int:
        """Pods of this deployment `node` can still take."""
        if self.per_pod == 0:
            return UNBOUNDED if node in self.free else 0
        return self.free.get(node, 0) // self.per_pod

    def take(self, node: str, pods: int) -> None:
        domain = self._domain(self.domain_of.get(node, ""))
        if domain is not None:
            domain.room -= self.room(node)
        if self.per_pod:
            self.free[node] -= pods * self.per_pod
        if domain is not None:
            domain.room += self.room(node)


class CapacityMemo:
    """The nodes' exclusions and capacity index of the last plans, per node filter, updated node by node.

    Consecutive plans see nearly the same nodes: the operator's inventory hands out the same `NodeInfo`
    object for a node until its labels, taints, readiness or usage change. So instead of filtering and
    indexing every node per plan, the index of the previous node tuple is patched where a position holds
    another object. Bounded: the `size` filters used last."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._by_filter: dict[Hashable, tuple[tuple[NodeInfo, ...], dict[str, str], CapacityIndex]] = {}

    def index(self, nodes: tuple[NodeInfo, ...], key: Hashable, why_not: Callable[[NodeInfo], str | None],
              label_key: str | None, resource: str | None, per_pod: int) -> tuple[dict[str, str], CapacityIndex]:
        """(why each excluded node is, a fresh fork of the index over `nodes`): what building them anew gives."""
        key = (key, label_key, resource, per_pod)
        last = self._by_filter.pop(key, None)
        changed = None if last is None or len(last[0]) != len(nodes) else [
            i for i, (a, b) in enumerate(zip(last[0], nodes, strict=True)) if a is not b]
        if last is None or changed is None or len(changed) * 4 > len(nodes) or any(
                last[0][i].name != nodes[i].name for i in changed):
            excluded = {n.name: why for n in nodes if (why := why_not(n)) is not None}
            index = CapacityIndex(nodes, {n.name for n in nodes} - set(excluded), label_key, resource, per_pod)
        else:
            _, excluded, index = last
            for i in changed:
                node = nodes[i]
                index.remove(node.name)
                excluded.pop(node.name, None)
                if (why := why_not(node)) is not None:
                    excluded[node.name] = why
                index.add(node, why is None)
        self._by_filter[key] = (nodes, excluded, index)
        while len(self._by_filter) > self.size:  # least recently used goes
            del self._by_filter[next(iter(self._by_filter))]
        return dict(excluded), index.fork()


def filter_key(spec: ModelDeploymentSpec) -> Hashable:
    """What `node_filter(spec, ...)` depends on, hashable (CapacityMemo's key)."""
    return (tuple(spec.placement.node_selector.items()),  # in order: the first mismatch is the one reported
            tuple((t.key, t.operator, t.value, t.effect) for t in spec.placement.tolerations),
            spec.accelerator.type.value)
