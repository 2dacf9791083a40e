"""One reconcile pass: observe → plan → decide, then the executor's writes, for one ModelDeployment.

All decisions come from pure modules (inputs, planner, builders, rollout, lifecycle, status); this module
reads what it is given (the informers' nodes and pods, their indexes) or lists children, plans under the
operator-wide lock, and hands the result to `executor.Executor`, which only writes. `Reconciler` holds
what lives between passes: locks, reservations, the planning indexes, the last status written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from supernode.api import constants as C
from supernode.api.capabilities import engine_shape_problem
from supernode.api.models import ModelDeployment
from supernode.api.pools import PoolView, pool_views
from supernode.operator import naming as N
from supernode.operator import rollout
from supernode.operator.cluster_index import NodeIndex, PodIndex
from supernode.operator.executor import Executor, Result, resource_version
from supernode.operator.fault_repair import FaultRepair, decide_repairs
from supernode.operator.faults import POD_HEALTH
from supernode.operator.group_secrets import GroupKeys
from supernode.operator.health_book import HealthBook
from supernode.operator.inputs import Indexed, Reservation, live_reservations, lost_nodes, own_pods, planning_inputs
from supernode.operator.inventory_cache import InventoryCache
from supernode.operator.kube import (
    LWS,
    NETWORK_POLICIES,
    PDBS,
    SERVICES,
    STATEFULSETS,
    KubeClient,
    Res,
)
from supernode.operator.nodepool import CapacityMemo
from supernode.operator.observe import group_states
from supernode.operator.pool_pass import PoolPass, observed, pool_facts, removed_pools
from supernode.operator.ranktable_objects import needs_rank_table
from supernode.operator.ranktable_sync import sync_rank_tables
from supernode.operator.triggers import PassFilter, pass_inputs

RECOVERY_WATCH_S = 900.0  # after a device-fault repair, pod events reconcile the deployment this long
log = logging.getLogger("supernode.operator")

def spec_error(exc: ValidationError) -> str:
    """The first validation problem, naming the field the way users write it (`spec.engine.type: ...`)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if isinstance(p, int | str) and not str(p).startswith("function"))
    rule_path = str((err.get("ctx") or {}).get("field_path") or "")
    path = f"{loc}{rule_path}" if rule_path.startswith(".") else (rule_path or loc)
    message = str(err["msg"])
    last = path.rsplit(".", 1)[-1]
    if message.startswith(f"{last}: "):  # cross-field rule messages repeat the field
        message = message[len(last) + 2:]
    return f"{path}: {message}"


Source = Callable[[], Iterable[Mapping[str, Any]]]  # the current nodes or pods (kopf indices), read when needed


@dataclass
class Reconciler:
    client: KubeClient
    supernode_label: str | None = None
    clock: Callable[[], float] = time.time
    keys: GroupKeys | None = None  # per-group Secret with store secret + engine token (group_secrets.py)
    network_policies: bool = False  # per-group NetworkPolicy: only the group's own pods (group_network.py)
    lws_cache_seconds: float = 60.0
    reservation_ttl: float = 600.0
    _lws: tuple[float, bool] | None = field(default=None, init=False)
    # Planning is one at a time (reads of children and writes are not): two deployments never plan
    # against the same free capacity, and a group's reservation is in place before the next plan.
    _plan_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    # One pass per object at a time (kopf handlers and the resync loop may both reach one object).
    _object_locks: dict[str, asyncio.Lock] = field(default_factory=dict, init=False)
    # Status we last wrote per object (resourceVersion, status): a watch event may still carry the older one.
    written: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict, init=False)
    # Devices promised to groups just created whose pods the pod index does not show yet.
    _reserved: dict[tuple[str, str], Reservation] = field(default_factory=dict, init=False)
    _inventory: InventoryCache = field(default_factory=InventoryCache, init=False)  # nodes/pods parsed once
    # The pods of the `pods` source, indexed and kept current by their informer (None: plan from the lists).
    pod_index: PodIndex | None = None
    _node_index: NodeIndex = field(default_factory=NodeIndex, init=False)  # the planner's node list, parsed once
    _capacity: CapacityMemo = field(default_factory=CapacityMemo, init=False)  # node filter + index, incremental
    health: HealthBook = field(default_factory=HealthBook)  # device faults (fed by the health watch handlers)
    _last_pass: dict[str, float] = field(default_factory=dict, init=False)  # uid -> when its last pass started
    reported: dict[tuple[str, str], str] = field(default_factory=dict, init=False)  # rank-table problems posted
    # Passes in flight at once. Waiters queue first come, first served, so under a burst the operator
    # finishes the deployments it started instead of advancing all of them a little at a time.
    concurrent_passes: int = 8
    _slots: asyncio.Semaphore | None = field(default=None, init=False)
    passes: PassFilter = field(default_factory=PassFilter, init=False)  # inputs of each last completed pass

    def forget(self, uid: str) -> None:
        self.reported = {k: v for k, v in self.reported.items() if k[0] != uid}
        self.written.pop(uid, None)
        self._object_locks.pop(uid, None)
        self._last_pass.pop(uid, None)
        self.passes.forget(uid)

    def needs_pass(self, body: Mapping[str, Any]) -> bool:
        """Whether a watch event with this body needs a pass: False when it only echoes our own writes."""
        meta = body["metadata"]
        return self.passes.needed(str(meta.get("uid", meta["name"])), pass_inputs(body))

    def passed_within(self, uid: str, seconds: float) -> bool:
        """Whether a pass over this object started less than `seconds` ago (a resync can skip it)."""
        return self.clock() - self._last_pass.get(uid, float("-inf")) < seconds

    def reserve(self, res: Reservation) -> None:
        self._reserved[res.key] = res

    def reservations(self, pods: Iterable[Mapping[str, Any]], now: float) -> list[Reservation]:
        """The reservations still needed (expired ones and those whose pods appeared are dropped)."""
        live = live_reservations(self._reserved.values(), pods, now, self.reservation_ttl, index=self.pod_index)
        self._reserved = {r.key: r for r in live}
        return live

    async def lws_installed(self) -> bool:
        now = self.clock()
        if self._lws is None or now - self._lws[0] > self.lws_cache_seconds:
            self._lws = (now, await self.client.crd_installed(N.LWS_CRD_NAME))
        return self._lws[1]

    async def reconcile(self, body: Mapping[str, Any], nodes: Source, pods: Source) -> Result:
        meta = body["metadata"]
        lock = self._object_locks.setdefault(str(meta.get("uid", meta["name"])), asyncio.Lock())
        if self._slots is None:  # created inside the running loop
            self._slots = asyncio.Semaphore(self.concurrent_passes)
        async with lock, self._slots:
            run = _Run(self, dict(body))
            # The API server drops status on create: a deployment without one that this process never
            # passed over has no children yet (at worst a crashed pass left some: creating them answers 409).
            run.unborn = not body.get("status") and run.uid not in self._last_pass
            self._last_pass[run.uid] = run.now
            result = await run.execute(nodes, pods)
            self.passes.completed(run.uid, pass_inputs(body))
            return result



class _Run(Executor):
    """One reconcile pass: reads, plans, then the executor's writes."""

    def __init__(self, owner: Reconciler, body: dict[str, Any]) -> None:
        super().__init__(owner, body)
        self.owner = owner
        self.unborn = False  # never reconciled: no children to list
        self.repairs: tuple[str, ...] = ()
        self.pod_faults: tuple[str, ...] = ()

    async def execute(self, nodes: Source, pods: Source) -> Result:
        previous = self.body.get("status") or {}
        written = self.owner.written.get(self.uid)
        if written and written[0] > resource_version(self.meta):
            previous, self.basis = written[1], str(written[0])  # our last write is newer than this event
        try:
            md = ModelDeployment.from_obj({k: self.body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
        except ValidationError as exc:
            return await self._invalid(spec_error(exc), previous)
        except KeyError as exc:
            return await self._invalid(f"{exc.args[0]}: Field required", previous)
        views = pool_views(md)
        for view in views:
            if problem := engine_shape_problem(view.md.spec):
                return await self._invalid(f"pool {view.name}: {problem}" if view.name else problem, previous)
        lws = await self.owner.lws_installed()
        selector = N.selector_string({C.LABEL_DEPLOYMENT: N.label_value(self.name)})
        kinds: tuple[Res, ...] = (LWS if lws else STATEFULSETS, SERVICES, PDBS)
        kinds += (NETWORK_POLICIES,) if self.r.network_policies else ()
        listed = [[] for _ in kinds] if self.unborn else await asyncio.gather(
            *(self.client.list_children(res, self.ns, selector) for res in kinds))
        workloads, services, pdbs = listed[:3]
        policies = listed[3] if len(listed) > 3 else []
        workloads = await self._repair_faults(md, workloads, lws, nodes, pods)
        async with self.owner._plan_lock:  # pure decisions on the latest pods + reservations; no I/O inside
            all_pods = _listed(pods())
            all_nodes = self.owner.health.node_view(nodes())  # nodes with a failing device take no new group
            indexed = None
            if self.owner.pod_index is not None:
                self.owner._node_index.sync(all_nodes)
                indexed = Indexed(self.owner._node_index, self.owner.pod_index, self.owner._capacity)
            passes = [self._plan_pool(view, all_nodes, all_pods, workloads, indexed) for view in views]
            removed = removed_pools(md, workloads, all_pods, all_nodes, {pp.pool for pp in passes}, self.now)

        exhausted = [why for pp in passes for why in await self._gang(pp.md, pp.inputs.groups, lws)]
        children = workloads + services + pdbs + policies
        for pp in passes:
            await self._apply_step(pp.md, pp.inputs.plan, pp.inputs.revision, lws, pp.step, pp.inputs.groups)
            await self._converge_children(pp.md, pp.inputs.plan, pp.inputs.revision, lws, pp.inputs.groups,
                                          pp.step, [o for o in children if N.pool_of(o) == pp.pool])
        for gone in removed:  # a pool taken out of the spec: its groups drain first, like a scale-down
            await self._apply_step(gone.md, None, "", lws, gone.step, gone.groups)
        # Their children stay until the step deletes their group (deleted ones went with `_delete_group`).
        handled = {g.name for gone in removed for g in gone.groups}
        await self._converge_deployment(md, lws, [o for o in children if o["metadata"]["name"] not in handled],
                                        {pp.pool for pp in passes})
        if any(needs_rank_table(pp.md) for pp in passes):
            await sync_rank_tables(self, [pp for pp in passes if needs_rank_table(pp.md)], workloads, selector)
        groups = [g for pp in passes for g in pp.inputs.groups]
        if not lws:
            await self._label_leaders(groups, [p for pp in passes for p in pp.inputs.mine])
        facts = pool_facts(self.meta.get("generation"), N.status_selector(self.name), passes, tuple(exhausted),
                           [gone for gone in removed if len(gone.step.delete) < len(gone.groups)])
        await self._status(groups, facts, previous)
        return Result(self.writes, self.status_out, facts.desired, self.repairs, self.pod_faults)

    async def _repair_faults(self, md: ModelDeployment, workloads: list[dict[str, Any]], lws: bool, nodes: Source,
                             pods: Source) -> list[dict[str, Any]]:
        """Groups with a failing device are fenced off from routing and repaired (fault_repair.py); returns the
        workloads as planning should see them (rebuilt groups gone, drained ones marked)."""
        node_list = _listed(nodes())
        faults_on = self.owner.health.faults_on(node_list, pods, md.spec.placement.tolerations)
        if not faults_on:  # the common case: one cheap look at the nodes, none at the pods
            return workloads
        mine = own_pods(list(pods()), self.ns, N.label_value(self.name))
        groups = group_states(workloads, mine, lost_nodes(node_list))
        repairs = decide_repairs(md, groups, {p["metadata"]["name"]: p for p in mine}, faults_on)
        if not repairs:
            return workloads
        fixer = FaultRepair(self.client, self.ns, self.now, lws, self._event,
                            lambda name: self._delete_group(name, lws))
        deleted, patched = await fixer.apply(repairs, md)
        # Until the repaired group is back, its pods' events reconcile this deployment (health_watch.py).
        self.owner.health.mark_recovering((self.ns, N.label_value(self.name)), self.now + RECOVERY_WATCH_S)
        self.writes += fixer.writes
        self.repairs = tuple(r.action for r in repairs)
        self.pod_faults = tuple(f.level for r in repairs for f in r.fault.faults if f.source == POD_HEALTH)
        return [patched.get(w["metadata"]["name"], w) for w in workloads if w["metadata"]["name"] not in deleted]

    def _plan_pool(self, view: PoolView, nodes: list[Mapping[str, Any]], pods: list[Mapping[str, Any]],
                   workloads: list[dict[str, Any]], indexed: Indexed | None) -> PoolPass:
        """Plan one pool and pick its rollout step; its new groups are reserved before the next pool plans."""
        md = view.md
        inputs = planning_inputs(md, nodes, pods, workloads, self.owner.reservations(pods, self.now),
                                 supernode_label=self.owner.supernode_label, inventory=self.owner._inventory.inventory,
                                 indexed=indexed)
        rev, plan, groups = inputs.revision, inputs.plan, inputs.groups
        step = rollout.next_step(
            observed(groups),
            rollout.Target(replicas=md.spec.replicas, revision=rev, max_surge=md.spec.rollout.max_surge,
                           max_unavailable=md.spec.rollout.max_unavailable,
                           drain_timeout=float(md.spec.rollout.drain_timeout_seconds), now=self.now,
                           placeable=frozenset(g.index for g in plan.groups if g.placed)))
        for slot in step.create:
            group = next(g for g in plan.groups if g.index == slot)
            self.owner.reserve(Reservation(self.ns, N.label_value(self.name), str(slot), rev,
                                       tuple(p.node for p in group.pods if p.node), plan.resource_name,
                                       plan.devices_per_pod, self.now, pool=view.name))
        return PoolPass(view, inputs, step)


def _listed(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """A source's items as a list: the source's own list when it is one (the informers' lists are read-only
    and the same object until something changes, which the per-list caches key on)."""
    return items if isinstance(items, list) else list(items)


