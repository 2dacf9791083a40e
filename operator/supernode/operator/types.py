"""Planner input and output: plain, frozen data. No I/O, no Kubernetes client.

Inventory → `planner.plan(md, inventory, existing=...)` → `Plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str | None = None
    effect: str = "NoSchedule"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One schedulable node as the planner sees it."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    allocatable: Mapping[str, int] = field(default_factory=dict)  # extended resource -> devices
    used: Mapping[str, int] = field(default_factory=dict)  # devices held by pods of *other* groups
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False


@dataclass(frozen=True, slots=True)
class Inventory:
    nodes: tuple[NodeInfo, ...] = ()
    skipped: tuple[str, ...] = ()  # inputs the loader could not use, each with the reason


@dataclass(frozen=True, slots=True)
class PodPlan:
    rank: int  # node rank inside the group (0 = leader)
    role: str  # constants.ROLE_LEADER | ROLE_WORKER
    node: str | None  # bound node; None when unplaced or placement is left to the scheduler
    devices: int  # accelerator devices this pod requests
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupPlan:
    index: int
    placed: bool
    supernode: str | None
    pods: tuple[PodPlan, ...]
    reason: str = ""  # why it is not placed, when it is not
    supernodes: tuple[str, ...] = ()  # distinct supernodes its pods landed on (>1 only when Preferred spans)
    kept: bool = False  # True when an existing binding was kept as is


@dataclass(frozen=True, slots=True)
class CapacityVerdict:
    desired: int
    placeable: int
    reasons: tuple[str, ...] = ()  # human-readable shortfall explanations

    @property
    def limited(self) -> bool:
        return self.placeable < self.desired


@dataclass(frozen=True, slots=True)
class Plan:
    deployment: str
    pods_per_group: int
    devices_per_pod: int
    resource_name: str | None  # extended resource requested per pod (None for cpu)
    groups: tuple[GroupPlan, ...]
    capacity: CapacityVerdict
    supernode_label: str | None = None  # node label read as the supernode id (None: no supernodes)
    notes: tuple[str, ...] = ()  # excluded nodes, re-placed groups, skipped inventory entries
    pool: str = ""  # the pool of spec.pools this plan is for ("" without pools)


# Existing placement the planner must keep (group index -> node name per rank), so that adding a
# replica never moves a running group.
ExistingBindings = Mapping[int, tuple[str | None, ...]]
