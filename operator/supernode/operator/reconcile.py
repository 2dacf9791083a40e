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
from supernode.operator import builders, lifecycle, rollout
from supernode.operator import naming as N
from supernode.operator.inventory import inventory_from_k8s
from supernode.operator.kube import CHILD_KINDS, LWS, PDBS, PODS, SERVICES, STATEFULSETS, ApiError, KubeClient
from supernode.operator.observe import GroupState, format_time, group_states
from supernode.operator.planner import plan as make_plan
from supernode.operator.status import Facts, compute_status
from supernode.operator.types import Plan

log = logging.getLogger("supernode.operator")


@dataclass(frozen=True, slots=True)
class Result:
    writes: int
    status: dict[str, Any] | None = None  # the status computed this pass (metrics)
    desired: int = 0


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


@dataclass(frozen=True, slots=True)
class Reservation:
    namespace: str
    deployment: str
    index: str
    revision: str
    nodes: tuple[str, ...]  # one per rank
    resource: str | None
    devices: int
    since: float

    @property
    def group(self) -> str:
        return f"{self.deployment}/{self.index}/{self.revision}"

    def pods(self) -> list[dict[str, Any]]:
        if not self.resource or not self.devices:
            return []
        return [{"metadata": {"name": f"reserved-{self.deployment}-{self.index}-{rank}", "namespace": self.namespace,
                              "labels": {}},
                 "spec": {"nodeName": node, "containers": [{"name": "reserved", "resources": {
                     "requests": {self.resource: str(self.devices)}, "limits": {self.resource: str(self.devices)}}}]},
                 "status": {"phase": "Pending"}} for rank, node in enumerate(self.nodes)]


@dataclass
class Reconciler:
    client: KubeClient
    supernode_label: str | None = None
    clock: Callable[[], float] = time.time
    lws_cache_seconds: float = 60.0
    _lws: tuple[float, bool] | None = field(default=None, init=False)
    # One reconcile at a time: two deployments never plan against the same free capacity.
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    # Status we last wrote per object (resourceVersion, status): a watch event may still carry the older one.
    _written: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict, init=False)
    # Devices promised to groups just created whose pods the pod index does not show yet.
    _reserved: dict[tuple[str, str], Reservation] = field(default_factory=dict, init=False)
    reservation_ttl: float = 600.0

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)

    def reserve(self, res: Reservation) -> None:
        self._reserved[(res.namespace, res.group)] = res

    def reservation_pods(self, all_pods: Iterable[Mapping[str, Any]], namespace: str, deployment: str,
                         now: float) -> list[dict[str, Any]]:
        """Placeholder pods for other deployments' groups whose real pods have not appeared yet."""
        seen = {(m.get("namespace"), (m.get("labels") or {}).get(C.LABEL_DEPLOYMENT), *_group_key(p))
                for p in all_pods if (m := p.get("metadata") or {})}
        for key, res in list(self._reserved.items()):
            if now - res.since > self.reservation_ttl or (
                    res.namespace, res.deployment, res.index, res.revision) in seen:
                del self._reserved[key]
        return [pod for res in self._reserved.values() if (res.namespace, res.deployment) != (namespace, deployment)
                for pod in res.pods()]

    async def lws_installed(self) -> bool:
        now = self.clock()
        if self._lws is None or now - self._lws[0] > self.lws_cache_seconds:
            self._lws = (now, await self.client.crd_installed(N.LWS_CRD_NAME))
        return self._lws[1]

    async def reconcile(self, body: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]],
                        pods: Iterable[Mapping[str, Any]]) -> Result:
        async with self._lock:
            run = _Run(self, dict(body))
            return await run.execute(list(nodes), list(pods))


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

    async def _event(self, type_: str, reason: str, message: str) -> None:
        log.info("%s/%s %s: %s", self.ns, self.name, reason, message)
        await self.client.post_event(self.body, type_, reason, message)
        self.writes += 1

    async def execute(self, nodes: list[Mapping[str, Any]], all_pods: list[Mapping[str, Any]]) -> Result:
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
        if problem := engine_shape_problem(md.spec):
            return await self._invalid(problem, previous)
        lws = await self.r.lws_installed()
        workload_res = LWS if lws else STATEFULSETS
        selector = N.selector_string({C.LABEL_DEPLOYMENT: N.label_value(self.name)})
        workloads = await self.client.list_children(workload_res, self.ns, selector)
        services = await self.client.list_children(SERVICES, self.ns, selector)
        pdbs = await self.client.list_children(PDBS, self.ns, selector)
        mine = [p for p in all_pods if (p.get("metadata") or {}).get("namespace") == self.ns
                and ((p.get("metadata") or {}).get("labels") or {}).get(C.LABEL_DEPLOYMENT) == N.label_value(self.name)]
        lost = frozenset(str(n["metadata"]["name"]) for n in nodes if not _node_ready(n))
        groups = group_states(workloads, mine, lost)
        rev = N.revision(md)
        n = md.spec.replicas
        current = {g.index: g for g in groups if not g.draining and g.revision == rev and g.index < n}
        existing = {i: tuple(g.nodes) + (None,) * max(0, g.expected_pods - len(g.nodes)) for i, g in current.items()
                    if g.nodes}
        # This deployment's current groups are being (re)placed; every other pod holds its devices.
        keep = {(str(i), rev) for i in current}
        mine_ids = {id(p) for p in mine}
        others = [p for p in all_pods if not (id(p) in mine_ids and _group_key(p) in keep)]
        others += self.r.reservation_pods(all_pods, self.ns, N.label_value(self.name), self.now)
        inventory = inventory_from_k8s(nodes, others)
        plan = make_plan(md, inventory, existing, supernode_label=self.r.supernode_label)
        capacity = plan.capacity
        if any(g.revision != rev for g in groups):
            # Mid-rollout the old groups hold devices they will give back: capacity is judged without them.
            free = inventory_from_k8s(nodes, [p for p in others if id(p) not in mine_ids])
            capacity = make_plan(md, free, existing, supernode_label=self.r.supernode_label).capacity

        exhausted = await self._gang(md, groups, lws)
        step = rollout.next_step(
            [rollout.Observed(g.index, g.name, g.revision, g.ready, g.draining, g.drain_started,
                              drained=g.annotations.get(C.ANNOTATION_DRAINED) == "true") for g in groups],
            rollout.Target(replicas=n, revision=rev, max_surge=md.spec.rollout.max_surge,
                           max_unavailable=md.spec.rollout.max_unavailable,
                           drain_timeout=float(md.spec.rollout.drain_timeout_seconds), now=self.now,
                           placeable=frozenset(g.index for g in plan.groups if g.placed)))
        await self._apply_step(md, plan, rev, lws, step, groups)
        await self._converge_children(md, plan, rev, lws, groups, step, workloads + services + pdbs)
        if not lws:
            await self._label_leaders(groups, mine)
        facts = Facts(generation=self.meta.get("generation"), desired=n, revision=rev,
                      selector=N.status_selector(self.name), placeable=capacity.placeable,
                      capacity_reasons=capacity.reasons, exhausted=tuple(exhausted),
                      rolling=not step.empty or bool(step.waiting))
        await self._status(groups, facts, previous)
        return Result(self.writes, self.status_out, n)

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
            if decision.action == "exhausted":
                exhausted.append(decision.reason)
            elif decision.action == "restart":
                res = LWS if lws else STATEFULSETS
                await self.client.patch(res, self.ns, g.name, {"metadata": {"annotations": {
                    C.ANNOTATION_RESTARTS: str(g.restarts + 1), C.ANNOTATION_LAST_RESTART: format_time(self.now)}}})
                self.writes += 1
                for pod in g.pods:  # the whole gang goes; its controller recreates every rank
                    await self.client.delete(PODS, self.ns, pod.name)
                    self.writes += 1
                await self._event("Warning", "GroupRestarted", decision.reason)
        return exhausted

    async def _apply_step(self, md: ModelDeployment, plan: Plan, rev: str, lws: bool, step: rollout.Step,
                          groups: list[GroupState]) -> None:
        by_name = {g.name: g for g in groups}
        for slot in step.create:
            group = next(g for g in plan.groups if g.index == slot)
            for obj in builders.group_objects(md, plan, group, rev, lws=lws):
                await self._create(obj)
            self.r.reserve(Reservation(self.ns, N.label_value(self.name), str(slot), rev,
                                       tuple(p.node for p in group.pods if p.node), plan.resource_name,
                                       plan.devices_per_pod, self.now))
            old = [g for g in groups if g.index == slot and g.revision != rev]
            verb = "GroupRolling" if old else "GroupCreated"
            where = f" on supernode {group.supernode}" if group.supernode else ""
            await self._event("Normal", verb, f"group {slot} at revision {rev}{where}")
        for name in step.drain:
            stamp = {C.ANNOTATION_DRAINING: "true", C.ANNOTATION_DRAIN_STARTED: format_time(self.now)}
            await self.client.patch(LWS if lws else STATEFULSETS, self.ns, name, {"metadata": {"annotations": stamp}})
            self.writes += 1
            g = by_name[name]
            for pod in g.pods[:1]:  # the leader: the router stops sending it new requests
                await self.client.patch(PODS, self.ns, pod.name, {"metadata": {"annotations": stamp}})
                self.writes += 1
            await self._event("Normal", "GroupDraining", f"group {g.index} ({name}) draining for up to "
                              f"{md.spec.rollout.drain_timeout_seconds}s")
        for name in step.delete:
            await self._delete_group(name, lws)
            g = by_name[name]
            reason = "GroupRolled" if g.index < md.spec.replicas else "GroupRemoved"
            await self._event("Normal", reason, f"group {g.index} ({name}, revision {g.revision}) deleted")

    async def _create(self, obj: dict[str, Any]) -> None:
        obj = _with_hash(obj)
        try:
            await self.client.create(obj)
        except ApiError as e:
            if e.code != 409:  # already there (e.g. an operator restart mid-reconcile): converge below
                raise
        self.writes += 1

    async def _delete_group(self, name: str, lws: bool) -> None:
        for res in ((LWS,) if lws else (STATEFULSETS, SERVICES)) + (PDBS,):
            await self.client.delete(res, self.ns, name, propagation="Background")
            self.writes += 1

    async def _converge_children(self, md: ModelDeployment, plan: Plan, rev: str, lws: bool,
                                 groups: list[GroupState], step: rollout.Step, children: list[dict[str, Any]]) -> None:
        """Existing groups and the leader Service match their manifests; strays are removed."""
        live = {g.name: g for g in groups if g.name not in step.delete}
        desired: list[dict[str, Any]] = [builders.leader_service(md, lws=lws)]
        plan_groups = {g.index: g for g in plan.groups}
        for g in live.values():
            if g.revision == rev and not g.draining and g.index in plan_groups and plan_groups[g.index].placed:
                desired += builders.group_objects(md, plan, plan_groups[g.index], rev, lws=lws)
        have = {(o["kind"], o["metadata"]["name"]): o for o in children}
        created = {N.group_name(self.name, s, rev) for s in step.create}
        for obj in desired:
            key = (obj["kind"], obj["metadata"]["name"])
            if key[1] in created:
                continue
            obj = _with_hash(obj)
            current = have.get(key)
            if current is None:
                await self._create(obj)
            elif (current["metadata"].get("annotations") or {}).get(N.ANNOTATION_APPLIED_HASH) != \
                    obj["metadata"]["annotations"][N.ANNOTATION_APPLIED_HASH]:
                # Workload annotations we own at runtime (restarts, draining) survive the merge patch.
                await self.client.patch(CHILD_KINDS[obj["kind"]], self.ns, key[1], obj)
                self.writes += 1
        names = {g.name for g in live.values()} | {N.leader_service_name(self.name)}
        for kind, name in have:
            if name not in names and name not in created and kind in CHILD_KINDS:
                await self.client.delete(CHILD_KINDS[kind], self.ns, name)
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


def _with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k != N.ANNOTATION_APPLIED_HASH}
    digest = N.manifest_hash({**obj, "metadata": {**meta, "annotations": notes}})
    return {**obj, "metadata": {**meta, "annotations": {**notes, N.ANNOTATION_APPLIED_HASH: digest}}}


def _node_ready(node: Mapping[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = [c for c in conditions if c.get("type") == "Ready"]
    return not ready or ready[0].get("status") == "True"


def _group_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (str(labels.get(C.LABEL_GROUP, "")), str(labels.get(C.LABEL_REVISION, "")))
