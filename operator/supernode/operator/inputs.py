"""What one reconcile plans from (pure): this deployment's pods and groups, the free capacity, the plan.

The executor (`reconcile`) reads the cluster and writes the result; everything between is here:
- the pod partition: this deployment's pods vs every other pod (which holds its devices), where this
  deployment's current groups are being (re)placed and so do not count against themselves;
- reservations: devices promised to groups created moments ago whose pods the pod index does not show
  yet; other deployments plan around them as placeholder pods until the pods appear or the TTL passes;
- the capacity verdict, which mid-rollout is judged without the old groups (they give their devices back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.api.pools import pool_name
from supernode.operator import naming as N
from supernode.operator.cluster_index import NodeIndex, PodIndex, lost_nodes
from supernode.operator.inventory import inventory_from_k8s
from supernode.operator.nodepool import CapacityMemo
from supernode.operator.observe import GroupState, group_states
from supernode.operator.planner import plan as make_plan
from supernode.operator.types import CapacityVerdict, Inventory, Plan

Pod = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Devices promised to one group just created (one node per rank)."""

    namespace: str
    deployment: str  # label value of the deployment name
    index: str
    revision: str
    nodes: tuple[str, ...]
    resource: str | None
    devices: int
    since: float
    pool: str = ""  # the group's pool ("" without spec.pools)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, f"{self.deployment}/{self.pool}/{self.index}/{self.revision}")

    placeholders: tuple[dict[str, Any], ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Built once: the same (read-only) objects on every plan, so InventoryCache parses them once too.
        object.__setattr__(self, "placeholders", self._placeholders())

    def pods(self) -> tuple[dict[str, Any], ...]:
        """Placeholder pods holding the promised devices (none for groups that need no devices)."""
        return self.placeholders

    def _placeholders(self) -> tuple[dict[str, Any], ...]:
        if not self.resource or not self.devices:
            return ()
        res = {self.resource: str(self.devices)}
        return tuple({"metadata": {"name": f"reserved-{self.deployment}-{self.pool}-{self.index}-{rank}",
                                   "namespace": self.namespace, "labels": {}},
                      "spec": {"nodeName": node, "containers": [{"name": "reserved", "resources": {
                          "requests": dict(res), "limits": dict(res)}}]},
                      "status": {"phase": "Pending"}} for rank, node in enumerate(self.nodes))


def group_key(pod: Pod) -> tuple[str, str]:
    """(group index, revision) from a pod's labels."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (str(labels.get(C.LABEL_GROUP, "")), str(labels.get(C.LABEL_REVISION, "")))


def live_reservations(reservations: Iterable[Reservation], pods: Iterable[Pod], now: float,
                      ttl: float, *, index: PodIndex | None = None) -> list[Reservation]:
    """The reservations still needed: not older than `ttl` and whose group has no pod in `pods` yet
    (`index`: the same pods, indexed; then `pods` is not read)."""
    young = [r for r in reservations if now - r.since <= ttl]
    if not young:
        return []
    if index is not None:
        return [r for r in young if not index.has_group((r.namespace, r.deployment, r.pool, r.index, r.revision))]
    seen = {(m.get("namespace"), (m.get("labels") or {}).get(C.LABEL_DEPLOYMENT), N.pool_of(p), *group_key(p))
            for p in pods if (m := p.get("metadata") or {})}
    return [r for r in young if (r.namespace, r.deployment, r.pool, r.index, r.revision) not in seen]


def placeholders(reservations: Iterable[Reservation], namespace: str, deployment: str,
                 pool: str = "") -> list[dict[str, Any]]:
    """Placeholder pods for the reservations of *other* deployments and other pools of this one (a pool
    never waits on itself)."""
    return [pod for r in reservations if (r.namespace, r.deployment, r.pool) != (namespace, deployment, pool)
            for pod in r.pods()]


def own_pods(pods: Iterable[Pod], namespace: str, deployment: str, pool: str = "") -> list[Pod]:
    """The pods of one deployment's pool (`deployment`: its label value; `pool` "" without spec.pools)."""
    return [p for p in pods if (m := p.get("metadata") or {}).get("namespace") == namespace
            and (m.get("labels") or {}).get(C.LABEL_DEPLOYMENT) == deployment and N.pool_of(p) == pool]


@dataclass(frozen=True, slots=True)
class PlanInputs:
    revision: str
    mine: list[Pod]  # this deployment's pods
    groups: list[GroupState]  # its replica groups as observed
    plan: Plan  # placement of the desired groups (current ones kept where still valid)
    capacity: CapacityVerdict  # what the cluster can hold (mid-rollout: without the old groups)


InventoryFn = Callable[[Iterable[Mapping[str, Any]], Iterable[Pod]], Inventory]


@dataclass(frozen=True, slots=True)
class Indexed:
    """The nodes and pods a pass is handed, indexed (cluster_index.py): the same plan in O(what changed)."""

    nodes: NodeIndex  # synced to the `nodes` list the pass plans on
    pods: PodIndex  # holds exactly the `pods` list the pass plans on
    capacity: CapacityMemo | None = None  # the planner's node filtering and capacity index, kept across passes

    @property
    def exact(self) -> bool:
        """Malformed inputs put notes (naming list positions) into the plan: those take the full path."""
        return not (self.nodes.malformed or self.pods.malformed)


def planning_inputs(md: ModelDeployment, nodes: Sequence[Mapping[str, Any]], pods: Sequence[Pod],
                    workloads: Sequence[Mapping[str, Any]], reservations: Iterable[Reservation], *,
                    supernode_label: str | None = None, inventory: InventoryFn = inventory_from_k8s,
                    indexed: Indexed | None = None) -> PlanInputs:
    """Everything one reconcile decides from, given what was read (no I/O). `inventory`: how nodes + pods
    become an Inventory (the operator passes `InventoryCache.inventory`, same result, parsed once);
    `indexed`: the same nodes and pods, indexed (the operator's informers keep it): same result, without
    reading every pod and node."""
    ns, label, pool = md.metadata.namespace or "default", N.label_value(md.metadata.name), pool_name(md)
    fast = indexed is not None and indexed.exact
    mine = indexed.pods.of_deployment(ns, label, pool) if indexed and fast else own_pods(pods, ns, label, pool)
    lost = indexed.nodes.lost if indexed and fast else lost_nodes(nodes)
    groups = group_states([w for w in workloads if N.pool_of(w) == pool], mine, lost)
    rev = N.revision(md)
    n = md.spec.replicas
    current = {g.index: g for g in groups if not g.draining and g.revision == rev and g.index < n}
    existing = {i: tuple(g.nodes) + (None,) * max(0, g.expected_pods - len(g.nodes)) for i, g in current.items()
                if g.nodes}
    # This deployment's current groups are being (re)placed; every other pod holds its devices.
    keep = {(str(i), rev) for i in current}
    held = placeholders(reservations, ns, label, pool)
    rolling = any(g.revision != rev for g in groups)
    if indexed and fast:
        kept = [p for p in mine if group_key(p) in keep]
        plan = make_plan(md, indexed.nodes.inventory(indexed.pods, kept, held), existing,
                         supernode_label=supernode_label, memo=indexed.capacity)
        # Mid-rollout the old groups hold devices they will give back: capacity is judged without them.
        free = indexed.nodes.inventory(indexed.pods, mine, held) if rolling else None
    else:
        mine_ids = {id(p) for p in mine}
        others = [p for p in pods if not (id(p) in mine_ids and group_key(p) in keep)] + held
        plan = make_plan(md, inventory(nodes, others), existing, supernode_label=supernode_label)
        free = inventory(nodes, [p for p in others if id(p) not in mine_ids]) if rolling else None
    capacity = plan.capacity if free is None else make_plan(md, free, existing,
                                                           supernode_label=supernode_label).capacity
    return PlanInputs(revision=rev, mine=mine, groups=groups, plan=plan, capacity=capacity)
