"""The executor: the writes of one reconcile pass, for one ModelDeployment.

`reconcile._Run` reads and plans (under the operator-wide planning lock); what it decided comes here as
plain values — the rollout step, the plan, the observed groups, the status facts — and this module only
writes: creates, merge patches whose manifest hash changed, deletes, Events and the status patch. A pass
with nothing to change performs zero writes: objects are compared by the hash of their last-applied
manifest, status only when it differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.api.pools import pool_name
from supernode.operator import builders, lifecycle, rollout
from supernode.operator import naming as N
from supernode.operator.group_secrets import GroupKeys, referenced_secrets
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
)
from supernode.operator.observe import GroupState, format_time
from supernode.operator.pool_pass import event_prefix
from supernode.operator.status import Facts, compute_status
from supernode.operator.types import Plan

WORKLOADS = frozenset({LWS.kind, STATEFULSETS.kind})  # the kinds whose pods read the group Secret
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


class Owner(Protocol):
    """What the executor reads from the operator-wide reconciler (reconcile.Reconciler)."""

    client: KubeClient
    keys: GroupKeys | None
    network_policies: bool

    @property
    def clock(self) -> Callable[[], float]: ...
    written: dict[str, tuple[int, dict[str, Any]]]  # uid -> (resourceVersion, status) we last wrote
    reported: dict[tuple[str, str], str]  # (uid, group) -> the rank-table problem last posted


class Executor:
    """One reconcile pass's writes; counts them."""

    def __init__(self, owner: Owner, body: dict[str, Any]) -> None:
        self.r, self.client, self.body = owner, owner.client, body
        self.meta = body["metadata"]
        self.uid = str(self.meta.get("uid", self.meta["name"]))
        self.ns, self.name = self.meta.get("namespace") or "default", self.meta["name"]
        self.now = owner.clock()
        self.writes = 0
        self.status_out: dict[str, Any] | None = None
        # The resourceVersion of what this pass read (the status patch is refused if the object changed since).
        self.basis = str(self.meta.get("resourceVersion") or "")

    async def _event(self, type_: str, reason: str, message: str) -> None:
        log.info("%s/%s %s: %s", self.ns, self.name, reason, message)
        await self.client.post_event(self.body, type_, reason, message)
        self.writes += 1

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
        return self.r.reported

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
        result = await self.client.patch_status(self.ns, self.name, patch, resource_version=self.basis or None)
        self.writes += 1
        self.r.written[self.uid] = (resource_version(result.get("metadata", {})), result.get("status", status))



def _same(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    return all(old.get(k) == v for k, v in new.items()) and all(k in new or _foreign(k) for k in old)


def _foreign(key: str) -> bool:
    """Status keys other writers own: kopf's, and the autoscaler's `autoscaling`."""
    return key.startswith("kopf") or key == "autoscaling"



def resource_version(meta: Mapping[str, Any]) -> int:
    value = str(meta.get("resourceVersion", ""))
    return int(value) if value.isdigit() else 0


_with_hash = N.with_applied_hash



_with_hash = N.with_applied_hash
