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
from supernode.operator.inventory import inventory_from_k8s
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
                      ttl: float) -> list[Reservation]:
    """The reservations still needed: not older than `ttl` and whose group has no pod in `pods` yet."""
    young = [r for r in reservations if now - r.since <= ttl]
    if not young:
        return []
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


def lost_nodes(nodes: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Nodes whose Ready condition is not True (their pods count as failed)."""
    out = set()
    for node in nodes:
        ready = [c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
        if ready and ready[0].get("status") != "True":
            out.add(str(node["metadata"]["name"]))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class PlanInputs:
    revision: str
    mine: list[Pod]  # this deployment's pods
    groups: list[GroupState]  # its replica groups as observed
    plan: Plan  # placement of the desired groups (current ones kept where still valid)
    capacity: CapacityVerdict  # what the cluster can hold (mid-rollout: without the old groups)


InventoryFn = Callable[[Iterable[Mapping[str, Any]], Iterable[Pod]], Inventory]


def planning_inputs(md: ModelDeployment, nodes: Sequence[Mapping[str, Any]], pods: Sequence[Pod],
                    workloads: Sequence[Mapping[str, Any]], reservations: Iterable[Reservation], *,
                    supernode_label: str | None = None, inventory: InventoryFn = inventory_from_k8s) -> PlanInputs:
    """Everything one reconcile decides from, given what was read (no I/O). `inventory`: how nodes + pods
    become an Inventory (the operator passes `InventoryCache.inventory`, same result, parsed once)."""
    ns, label, pool = md.metadata.namespace or "default", N.label_value(md.metadata.name), pool_name(md)
    mine = own_pods(pods, ns, label, pool)
    groups = group_states([w for w in workloads if N.pool_of(w) == pool], mine, lost_nodes(nodes))
    rev = N.revision(md)
    n = md.spec.replicas
    current = {g.index: g for g in groups if not g.draining and g.revision == rev and g.index < n}
    existing = {i: tuple(g.nodes) + (None,) * max(0, g.expected_pods - len(g.nodes)) for i, g in current.items()
                if g.nodes}
    # This deployment's current groups are being (re)placed; every other pod holds its devices.
    keep = {(str(i), rev) for i in current}
    mine_ids = {id(p) for p in mine}
    others = [p for p in pods if not (id(p) in mine_ids and group_key(p) in keep)]
    others += placeholders(reservations, ns, label, pool)
    plan = make_plan(md, inventory(nodes, others), existing, supernode_label=supernode_label)
    capacity = plan.capacity
    if any(g.revision != rev for g in groups):
        # Mid-rollout the old groups hold devices they will give back: capacity is judged without them.
        free = inventory(nodes, [p for p in others if id(p) not in mine_ids])
        capacity = make_plan(md, free, existing, supernode_label=supernode_label).capacity
    return PlanInputs(revision=rev, mine=mine, groups=groups, plan=plan, capacity=capacity)
