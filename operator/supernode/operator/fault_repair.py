"""Device faults under running groups: decide per group (pure `decide_repairs`), then act (`FaultRepair`).

Runs inside one reconcile pass, before planning. Fencing comes first and is one patch per pod: the
leader pod gets `supernode.io/device-fault`, which router discovery reads as "not routable", so the
routers stop sending the group traffic within one watch event, before any of its pods is deleted.
Then, per action (faults.py): `rebuild` deletes the group (its slot is refilled by the same pass on
healthy devices, fenced nodes excluded), `drain` marks it draining (replaced once idle or at the drain
timeout), `restart` recreates its pods in place once per distinct fault (escalating to `rebuild` when the
restart budget is spent). Groups without a fault are never touched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.operator.faults import Action, DeviceFault, GroupFault, group_fault
from supernode.operator.kube import LWS, PODS, STATEFULSETS, KubeClient
from supernode.operator.observe import GroupState, format_time

Pod = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Repair:
    group: GroupState
    action: Action
    fault: GroupFault


def _fenced_for_rebuild(pod: Pod) -> bool:
    """Pods of a group already being rebuilt (still terminating): their faults are handled."""
    note = ((pod.get("metadata") or {}).get("annotations") or {}).get(C.ANNOTATION_DEVICE_FAULT, "")
    return str(note).startswith("rebuild")


def decide_repairs(md: ModelDeployment, groups: Sequence[GroupState], pods: Mapping[str, Pod],
           faults_on: Mapping[str, Sequence[DeviceFault]]) -> list[Repair]:
    """What each faulty group needs now; groups already handled for their faults are left alone."""
    out: list[Repair] = []
    for g in groups:
        members = [pods[p.name] for p in g.pods if p.name in pods and not _fenced_for_rebuild(pods[p.name])]
        fault = group_fault(members, faults_on)
        if fault is None:
            continue
        action = fault.action
        if action == "restart":
            if g.annotations.get(C.ANNOTATION_FAULT_HANDLED) == fault.digest:
                continue  # restarted for exactly these faults already
            if g.restarts >= md.spec.recovery.max_group_restarts:
                action = "rebuild"  # restarting in place is spent: move it
        if g.draining and action != "rebuild":
            continue
        out.append(Repair(g, action, fault))
    return out


class FaultRepair:
    """The writes of `decide_repairs`' repairs, for one reconcile pass (counts them)."""

    def __init__(self, client: KubeClient, namespace: str, now: float, lws: bool,
                 event: Callable[[str, str, str], Awaitable[None]],
                 delete_group: Callable[[str], Awaitable[None]]) -> None:
        self.client, self.ns, self.now, self.lws = client, namespace, now, lws
        self.event, self.delete_group = event, delete_group
        self.writes = 0

    async def _annotate(self, res: Any, name: str, notes: Mapping[str, str | None]) -> dict[str, Any]:
        result = await self.client.patch(res, self.ns, name, {"metadata": {"annotations": dict(notes)}})
        self.writes += 1
        return result

    async def fence(self, repair: Repair) -> None:
        """Routers stop picking the group: its leader first (the one they route to), then the other ranks of a
        group that is rebuilt (so a later pass knows their faults are handled while they terminate)."""
        note = f"{repair.action}: {repair.fault.reason}"[:1024]
        pods = repair.group.pods if repair.action == "rebuild" else repair.group.pods[:1]
        for pod in pods:
            await self._annotate(PODS, pod.name, {C.ANNOTATION_DEVICE_FAULT: note})

    async def apply(self, repairs: Sequence[Repair], md: ModelDeployment) -> tuple[set[str], dict[str, Any]]:
        """Fence every faulty group, then act. Returns (workloads deleted, workloads patched by name)."""
        for repair in repairs:
            if repair.action != "drain":  # a draining leader is already skipped by the routers
                await self.fence(repair)
        deleted: set[str] = set()
        patched: dict[str, Any] = {}
        res = LWS if self.lws else STATEFULSETS
        for repair in repairs:
            g, why = repair.group, repair.fault.reason
            if repair.action == "rebuild":
                await self.delete_group(g.name)
                deleted.add(g.name)
                await self.event("Warning", "DeviceFaultRebuild", f"group {g.index} ({g.name}) rebuilt on healthy "
                                 f"devices: {why}")
            elif repair.action == "drain":
                stamp = {C.ANNOTATION_DRAINING: "true", C.ANNOTATION_DRAIN_STARTED: format_time(self.now)}
                patched[g.name] = await self._annotate(res, g.name, stamp)
                for pod in g.pods[:1]:
                    await self._annotate(PODS, pod.name, stamp)
                await self.event("Warning", "DeviceFaultDrain", f"group {g.index} ({g.name}) draining, replaced "
                                 f"when idle or after {md.spec.rollout.drain_timeout_seconds}s: {why}")
            else:
                patched[g.name] = await self._annotate(res, g.name, {
                    C.ANNOTATION_RESTARTS: str(g.restarts + 1), C.ANNOTATION_LAST_RESTART: format_time(self.now),
                    C.ANNOTATION_FAULT_HANDLED: repair.fault.digest, C.ANNOTATION_FAILURE_SEEN: None})
                for pod in g.pods:  # the whole gang, in place: its controller recreates every rank
                    await self.client.delete(PODS, self.ns, pod.name)
                    self.writes += 1
                await self.event("Warning", "DeviceFaultRestart", f"group {g.index} ({g.name}) restarted in place "
                                 f"({g.restarts + 1}/{md.spec.recovery.max_group_restarts}): {why}")
        return deleted, patched
