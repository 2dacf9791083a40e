"""The executor: observe → plan → decide → apply, for one ModelDeployment.

All decisions come from pure modules (planner, builders, rollout, lifecycle, status); this module only
reads the inputs it is given (kopf indices) or lists children, then writes through `KubeClient`.
A reconcile with nothing to change performs zero writes: objects are compared by the hash of their
last-applied manifest, status only when it differs.
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
from supernode.api.pools import PoolView, pool_name, pool_views
from supernode.operator import builders, lifecycle, rollout
from supernode.operator import naming as N
from supernode.operator.fault_repair import FaultRepair, decide_repairs
from supernode.operator.faults import POD_HEALTH
from supernode.operator.group_secrets import GroupKeys, referenced_secrets
from supernode.operator.health_book import HealthBook
from supernode.operator.inputs import Reservation, live_reservations, lost_nodes, own_pods, planning_inputs
from supernode.operator.inventory_cache import InventoryCache
from supernode.operator.kube import (
    CHILD_KINDS,
    LWS,
    NETWORK_POLICIES,
    PDBS,
    PODS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    ApiError,
    KubeClient,
    Res,
)
from supernode.operator.observe import GroupState, format_time, group_states
from supernode.operator.pool_pass import PoolPass, event_prefix, observed, pool_facts, removed_pools
from supernode.operator.ranktable_objects import needs_rank_table
from supernode.operator.ranktable_sync import sync_rank_tables
from supernode.operator.status import Facts, compute_status
from supernode.operator.triggers import PassFilter, pass_inputs
from supernode.operator.types import Plan

WORKLOADS = frozenset({LWS.kind, STATEFULSETS.kind})  # the kinds whose pods read the group Secret
RECOVERY_WATCH_S = 900.0  # after a device-fault repair, pod events reconcile the deployment this long
log = logging.getLogger("supernode.operator")


@dataclass(frozen=True, slots=True)
class Result:
    writes: int
    status: dict[str, Any] | None = None  # the status computed this pass (metrics)
    desired: int = 0
    repairs: tuple[str, ...] = ()  # device-fault actions taken this pass (metrics)
    # Levels of the faults read from the repaired pods' own status (no device-plugin report names them,
    # so they are counted as reported here, once: the repair fences the group off for later passes).
    pod_faults: tuple[str, ...] = ()


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
    _written: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict, init=False)
    # Devices promised to groups just created whose pods the pod index does not show yet.
    _reserved: dict[tuple[str, str], Reservation] = field(default_factory=dict, init=False)
    _inventory: InventoryCache = field(default_factory=InventoryCache, init=False)  # nodes/pods parsed once
    health: HealthBook = field(default_factory=HealthBook)  # device faults (fed by the health watch handlers)
    _last_pass: dict[str, float] = field(default_factory=dict, init=False)  # uid -> when its last pass started
    _reported: dict[tuple[str, str], str] = field(default_factory=dict, init=False)  # rank-table problems posted
    # Passes in flight at once. Waiters queue first come, first served, so under a burst the operator
    # finishes the deployments it started instead of advancing all of them a little at a time.
    concurrent_passes: int = 8
    _slots: asyncio.Semaphore | None = field(default=None, init=False)
    passes: PassFilter = field(default_factory=PassFilter, init=False)  # inputs of each last completed pass

    def forget(self, uid: str) -> None:
        self._reported = {k: v for k, v in self._reported.items() if k[0] != uid}
        self._written.pop(uid, None)
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
        live = live_reservations(self._reserved.values(), pods, now, self.reservation_ttl)
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


class _Run:
    """One reconcile pass; counts its writes."""

    def __init__(self, owner: Reconciler, body: dict[str, Any]) -> None:
        self.r, self.client, self.body = owner, owner.client, body
        self.meta = body["metadata"]
        self.uid = str(self.meta.get("uid", self.meta["name"]))
        self.ns, self.name = self.meta.get("namespace") or "default", self.meta["name"]
        self.now = owner.clock()
        self.writes = 0
        self.status_out: dict[str, Any] | None = None
        self.unborn = False  # never reconciled: no children to list
        self.repairs: tuple[str, ...] = ()
        self.pod_faults: tuple[str, ...] = ()

    async def _event(self, type_: str, reason: str, message: str) -> None:
        log.info("%s/%s %s: %s", self.ns, self.name, reason, message)
        await self.client.post_event(self.body, type_, reason, message)
        self.writes += 1

    async def execute(self, nodes: Source, pods: Source) -> Result:
        previous = self.body.get("status") or {}
        written = self.r._written.get(self.uid)
        if written and written[0] > _rv(self.meta):
            previous = written[1]
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
        lws = await self.r.lws_installed()
        selector = N.selector_string({C.LABEL_DEPLOYMENT: N.label_value(self.name)})
        kinds: tuple[Res, ...] = (LWS if lws else STATEFULSETS, SERVICES, PDBS)
        kinds += (NETWORK_POLICIES,) if self.r.network_policies else ()
        listed = [[] for _ in kinds] if self.unborn else await asyncio.gather(
            *(self.client.list_children(res, self.ns, selector) for res in kinds))
        workloads, services, pdbs = listed[:3]
        policies = listed[3] if len(listed) > 3 else []
        workloads = await self._repair_faults(md, workloads, lws, nodes, pods)
        async with self.r._plan_lock:  # pure decisions on the latest pods + reservations; no I/O inside
            all_pods = list(pods())
            all_nodes = self.r.health.node_view(nodes())  # nodes with a failing device take no new group
            passes = [self._plan_pool(view, all_nodes, all_pods, workloads) for view in views]
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
        node_list = list(nodes())
        faults_on = self.r.health.faults_on(node_list, pods, md.spec.placement.tolerations)
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
        self.r.health.mark_recovering((self.ns, N.label_value(self.name)), self.now + RECOVERY_WATCH_S)
        self.writes += fixer.writes
        self.repairs = tuple(r.action for r in repairs)
        self.pod_faults = tuple(f.level for r in repairs for f in r.fault.faults if f.source == POD_HEALTH)
        return [patched.get(w["metadata"]["name"], w) for w in workloads if w["metadata"]["name"] not in deleted]

    def _plan_pool(self, view: PoolView, nodes: list[Mapping[str, Any]], pods: list[Mapping[str, Any]],
                   workloads: list[dict[str, Any]]) -> PoolPass:
        """Plan one pool and pick its rollout step; its new groups are reserved before the next pool plans."""
        md = view.md
        inputs = planning_inputs(md, nodes, pods, workloads, self.r.reservations(pods, self.now),
                                 supernode_label=self.r.supernode_label, inventory=self.r._inventory.inventory)
        rev, plan, groups = inputs.revision, inputs.plan, inputs.groups
        step = rollout.next_step(
            observed(groups),
            rollout.Target(replicas=md.spec.replicas, revision=rev, max_surge=md.spec.rollout.max_surge,
                           max_unavailable=md.spec.rollout.max_unavailable,
                           drain_timeout=float(md.spec.rollout.drain_timeout_seconds), now=self.now,
                           placeable=frozenset(g.index for g in plan.groups if g.placed)))
        for slot in step.create:
            group = next(g for g in plan.groups if g.index == slot)
            self.r.reserve(Reservation(self.ns, N.label_value(self.name), str(slot), rev,
                                       tuple(p.node for p in group.pods if p.node), plan.resource_name,
                                       plan.devices_per_pod, self.now, pool=view.name))
        return PoolPass(view, inputs, step)

    async def _invalid(self, message: str, previous: Mapping[str, Any]) -> Result:
        facts = Facts(generation=self.meta.get("generation"), desired=0, revision="", selector=N.status_selector(
            self.name), placeable=0, invalid=message)
        status = compute_status([], facts, previous, format_time(self.now))
        status.pop("groups")
        old = {c["type"]: c for c in previous.get("conditions", [])}
        if old.get(C.COND_DEGRADED, {}).get("message") != message:
            await self._event("Warning", "InvalidSpec", message)
        await self._status_patch(status, previous)
        return Result(self.writes, status=status)

    async def _gang(self, md: ModelDeployment, groups: list[GroupState], lws: bool) -> list[str]:
        exhausted: list[str] = []
        for g in groups:
            decision = lifecycle.decide(g, md.spec.recovery, self.now)
            res = LWS if lws else STATEFULSETS
            if decision.action == "exhausted":
                exhausted.append(decision.reason)
            elif decision.action in ("mark", "clear"):  # the back-off counts from when the failure was seen
                seen = format_time(self.now, precise=True) if decision.action == "mark" else None
                await self.client.patch(res, self.ns, g.name, {"metadata": {"annotations": {
                    C.ANNOTATION_FAILURE_SEEN: seen}}})
                self.writes += 1
                if decision.action == "mark":
                    await self._event("Warning", "GroupFailed", decision.reason)
            elif decision.action == "restart":
                await self.client.patch(res, self.ns, g.name, {"metadata": {"annotations": {
                    C.ANNOTATION_RESTARTS: str(g.restarts + 1), C.ANNOTATION_LAST_RESTART: format_time(self.now),
                    C.ANNOTATION_FAILURE_SEEN: None}}})
                self.writes += 1
                for pod in g.pods:  # the whole gang goes; its controller recreates every rank
                    await self.client.delete(PODS, self.ns, pod.name)
                    self.writes += 1
                await self._event("Warning", "GroupRestarted", decision.reason)
        return exhausted

    async def _apply_step(self, md: ModelDeployment, plan: Plan | None, rev: str, lws: bool, step: rollout.Step,
                          groups: list[GroupState]) -> None:
        by_name = {g.name: g for g in groups}
        for slot in step.create:
            assert plan is not None, "a step that creates groups comes with their plan"
            group = next(g for g in plan.groups if g.index == slot)
            # reserved while planning
            for obj in builders.group_objects(md, plan, group, rev, lws=lws, keys=self.r.keys,
                                              policy=self.r.network_policies):
                await self._create(obj)
            old = [g for g in groups if g.index == slot and g.revision != rev]
            verb = "GroupRolling" if old else "GroupCreated"
            where = f" on supernode {group.supernode}" if group.supernode else ""
            await self._event("Normal", verb, f"{event_prefix(md)}group {slot} at revision {rev}{where}")
        for name in step.drain:
            stamp = {C.ANNOTATION_DRAINING: "true", C.ANNOTATION_DRAIN_STARTED: format_time(self.now)}
            await self.client.patch(LWS if lws else STATEFULSETS, self.ns, name, {"metadata": {"annotations": stamp}})
            self.writes += 1
            g = by_name[name]
            for pod in g.pods[:1]:  # the leader: the router stops sending it new requests
                await self.client.patch(PODS, self.ns, pod.name, {"metadata": {"annotations": stamp}})
                self.writes += 1
            await self._event("Normal", "GroupDraining", f"{event_prefix(md)}group {g.index} ({name}) draining "
                              f"for up to {md.spec.rollout.drain_timeout_seconds}s")
        for name in step.delete:
            await self._delete_group(name, lws)
            g = by_name[name]
            reason = "GroupRolled" if g.index < md.spec.replicas else "GroupRemoved"
            await self._event("Normal", reason,
                              f"{event_prefix(md)}group {g.index} ({name}, revision {g.revision}) deleted")

    @property
    def reported(self) -> dict[tuple[str, str], str]:
        return self.r._reported

    async def create(self, obj: dict[str, Any]) -> None:
        """Create `obj` with its applied-hash annotation (409: already there), counted as a write."""
        await self._create(obj)

    async def event(self, type_: str, reason: str, message: str) -> None:
        await self._event(type_, reason, message)

    async def _create(self, obj: dict[str, Any]) -> None:
        obj = _with_hash(obj)
        try:
            await self.client.create(obj)
        except ApiError as e:
            if e.status != 409:  # already there (e.g. an operator restart mid-reconcile): converge below
                raise
        self.writes += 1

    async def _delete_group(self, name: str, lws: bool) -> None:
        extra = ((NETWORK_POLICIES,) if self.r.network_policies else ()) + ((SECRETS,) if self.r.keys else ())
        for res in ((LWS,) if lws else (STATEFULSETS, SERVICES)) + (PDBS,) + extra:
            target = self.r.keys.secret_name(name) if res is SECRETS and self.r.keys else name
            await self.client.delete(res, self.ns, target, propagation="Background")
            self.writes += 1

    async def _converge_children(self, md: ModelDeployment, plan: Plan, rev: str, lws: bool,
                                 groups: list[GroupState], step: rollout.Step, children: list[dict[str, Any]]) -> None:
        """One pool's existing groups match their manifests; its strays are removed (`children`: the pool's)."""
        live = {g.name: g for g in groups if g.name not in step.delete}
        desired: list[dict[str, Any]] = []
        plan_groups = {g.index: g for g in plan.groups}
        for g in live.values():
            if g.revision == rev and not g.draining and g.index in plan_groups and plan_groups[g.index].placed:
                desired += builders.group_objects(md, plan, plan_groups[g.index], rev, lws=lws, keys=self.r.keys,
                                                  policy=self.r.network_policies)
        have = {(o["kind"], o["metadata"]["name"]): o for o in children}
        created = {N.group_name(self.name, s, rev, pool_name(md)) for s in step.create}
        # Group Secrets are write-only (the operator may not read Secrets): (re)created, 409 = present,
        # whenever their workload is created or changed (an upgrade first adding them, new keys renaming them);
        # Secrets the old workload read and the new one does not are deleted after the patch.
        secrets = {o["metadata"]["labels"][C.LABEL_GROUP]: o for o in desired if o["kind"] == SECRETS.kind}
        for obj in desired:
            key = (obj["kind"], obj["metadata"]["name"])
            if key[1] in created or key[0] == SECRETS.kind:
                continue
            obj = _with_hash(obj)
            current = have.get(key)
            secret = secrets.get(obj["metadata"]["labels"].get(C.LABEL_GROUP, "")) if key[0] in WORKLOADS else None
            if current is None:
                if secret:
                    await self._create(secret)
                await self._create(obj)
            elif (current["metadata"].get("annotations") or {}).get(N.ANNOTATION_APPLIED_HASH) != \
                    obj["metadata"]["annotations"][N.ANNOTATION_APPLIED_HASH]:
                if secret:
                    await self._create(secret)
                # Workload annotations we own at runtime (restarts, draining) survive the merge patch.
                await self.client.patch(CHILD_KINDS[obj["kind"]], self.ns, key[1], obj)
                self.writes += 1
                if key[0] in WORKLOADS:
                    for stale in referenced_secrets(current) - referenced_secrets(obj):
                        await self.client.delete(SECRETS, self.ns, stale)
                        self.writes += 1
        # `children` was listed before this pass deleted `step.delete`'s groups: those are gone already.
        keep = {g.name for g in live.values()} | {N.leader_service_name(self.name)} | created | set(step.delete)
        for kind, name in have:
            if name not in keep and kind in CHILD_KINDS:
                await self.client.delete(CHILD_KINDS[kind], self.ns, name)
                self.writes += 1

    async def _converge_deployment(self, md: ModelDeployment, lws: bool, children: list[dict[str, Any]],
                                   pools: set[str]) -> None:
        """The leader Service matches its manifest; children of a pool no longer in the spec are removed."""
        leader = _with_hash(builders.leader_service(md, lws=lws))
        current = next((o for o in children if o["kind"] == SERVICES.kind
                        and o["metadata"]["name"] == leader["metadata"]["name"]), None)
        if current is None:
            await self._create(leader)
        elif (current["metadata"].get("annotations") or {}).get(N.ANNOTATION_APPLIED_HASH) != \
                leader["metadata"]["annotations"][N.ANNOTATION_APPLIED_HASH]:
            await self.client.patch(SERVICES, self.ns, leader["metadata"]["name"], leader)
            self.writes += 1
        for obj in children:
            if obj is not current and N.pool_of(obj) not in pools and obj["kind"] in CHILD_KINDS:
                await self.client.delete(CHILD_KINDS[obj["kind"]], self.ns, obj["metadata"]["name"])
                self.writes += 1

    async def _label_leaders(self, groups: list[GroupState], pods: list[Mapping[str, Any]]) -> None:
        """StatefulSet mode: rank 0 gets the leader role label the router selects on."""
        leaders = {p.name for g in groups for p in g.pods if p.rank == 0}
        for pod in pods:
            meta = pod["metadata"]
            if meta["name"] in leaders and (meta.get("labels") or {}).get(C.LABEL_ROLE) != C.ROLE_LEADER:
                await self.client.patch(PODS, self.ns, meta["name"], {"metadata": {"labels": {
                    C.LABEL_ROLE: C.ROLE_LEADER}}})
                self.writes += 1

    async def _status(self, groups: list[GroupState], facts: Facts, previous: Mapping[str, Any]) -> None:
        status = compute_status(groups, facts, previous, format_time(self.now))
        self.status_out = status
        old = {c["type"]: c for c in previous.get("conditions", [])}
        limited = next(c for c in status["conditions"] if c["type"] == C.COND_CAPACITY_LIMITED)
        if limited["status"] == "True" and old.get(C.COND_CAPACITY_LIMITED, {}).get("message") != limited["message"]:
            await self._event("Warning", "CapacityShortfall", limited["message"])
        await self._status_patch(status, previous)

    async def _status_patch(self, status: dict[str, Any], previous: Mapping[str, Any]) -> None:
        if _same(status, previous):
            return
        # Merge patch: keys we no longer report are nulled, lists are replaced whole.
        patch = {**{k: None for k in previous if k not in status and not _foreign(k)}, **status}
        result = await self.client.patch_status(self.ns, self.name, patch)
        self.writes += 1
        self.r._written[self.uid] = (_rv(result.get("metadata", {})), result.get("status", status))


def _same(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    return all(old.get(k) == v for k, v in new.items()) and all(k in new or _foreign(k) for k in old)


def _foreign(key: str) -> bool:
    """Status keys other writers own: kopf's, and the autoscaler's `autoscaling`."""
    return key.startswith("kopf") or key == "autoscaling"


def _rv(meta: Mapping[str, Any]) -> int:
    value = str(meta.get("resourceVersion", ""))
    return int(value) if value.isdigit() else 0


_with_hash = N.with_applied_hash
