"""`ModelDeployment.status` from what was observed (pure). Conditions carry actionable messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernode.api import constants as C
from supernode.operator.observe import GroupState
from supernode.operator.pool_status import PoolFacts, pool_status


@dataclass(frozen=True, slots=True)
class Facts:
    generation: int | None
    desired: int
    revision: str
    selector: str
    placeable: int
    capacity_reasons: tuple[str, ...] = ()
    invalid: str = ""  # spec problem, field named
    exhausted: tuple[str, ...] = ()  # groups out of restart budget
    rolling: bool = False  # the rollout planner still has work
    pools: tuple[PoolFacts, ...] = ()  # per pool (spec.pools); desired/placeable above are their sums

    def desired_of(self, g: GroupState) -> int:
        return next((p.desired for p in self.pools if p.name == g.pool), 0) if self.pools else self.desired

    def revision_of(self, g: GroupState) -> str:
        return next((p.revision for p in self.pools if p.name == g.pool), "") if self.pools else self.revision


def _cond(type_: str, ok: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message,
            "observedGeneration": generation}


def _phase(g: GroupState) -> str:
    if g.draining:
        return "Draining"
    if g.failure:
        return "Failed"
    if g.ready:
        return "Ready"
    return "Starting" if g.pods else "Pending"


def compute_status(groups: Sequence[GroupState], facts: Facts, previous: Mapping[str, Any] | None,
                   now: str) -> dict[str, Any]:
    live = [g for g in groups if not g.draining]
    serving = [g for g in live if g.index < facts.desired_of(g)]
    ready = sum(g.ready for g in serving)
    updated = sum(g.revision == facts.revision_of(g) for g in serving)
    gen = facts.generation
    conditions = []
    if facts.invalid:
        conditions = [
            _cond(C.COND_READY, False, "InvalidSpec", facts.invalid, gen),
            _cond(C.COND_PROGRESSING, False, "InvalidSpec", "fix the spec; nothing is changed until then", gen),
            _cond(C.COND_DEGRADED, True, "InvalidSpec", facts.invalid, gen),
        ]
    else:
        ready_ok = ready >= facts.desired
        conditions.append(_cond(C.COND_READY, ready_ok, "AllGroupsReady" if ready_ok else "GroupsNotReady",
                                f"{ready}/{facts.desired} replica groups ready", gen))
        progressing = (facts.rolling or updated < facts.desired or len(live) != facts.desired or not ready_ok
                       or len(live) != len(groups))
        if updated < facts.desired and any(g.revision != facts.revision_of(g) for g in groups):
            reason = "RollingUpdate"
        elif len(live) > facts.desired or len(live) != len(groups):
            reason = "ScalingDown" if len(live) > facts.desired else "Draining"
        elif not ready_ok:
            reason = "GroupsStarting"
        else:
            reason = "Complete"
        conditions.append(_cond(C.COND_PROGRESSING, progressing, reason,
                                f"{updated}/{facts.desired} groups at revision {facts.revision}", gen))
        degraded = bool(facts.exhausted)
        conditions.append(_cond(C.COND_DEGRADED, degraded, "RestartBudgetExhausted" if degraded else "Healthy",
                                "; ".join(facts.exhausted) + (
                                    " — fix the cause, then raise spec.recovery.maxGroupRestarts or delete the "
                                    "group's workload to reset its budget" if degraded else ""), gen))
    limited = facts.placeable < facts.desired and not facts.invalid
    message = (f"{facts.placeable}/{facts.desired} groups placeable: " + "; ".join(facts.capacity_reasons)
               + " — add nodes/supernodes with free devices or lower spec.replicas") if limited else (
        f"all {facts.desired} groups placeable")
    auto = (previous or {}).get("autoscaling") or {}
    if auto.get("reason") == "CapacityLimited" and not limited and not facts.invalid:
        limited = True  # the autoscaler wants a group the pool cannot place (its numbers: status.autoscaling)
        message = (f"autoscaler wants {auto.get('desiredReplicas', facts.desired) + 1} groups, the pool places "
                   f"{facts.desired} — add supernodes to the pool or lower spec.autoscaling.maxReplicas")
    conditions.append(_cond(C.COND_CAPACITY_LIMITED, limited, "InsufficientCapacity" if limited else "Sufficient",
                            message, gen))
    # Conditions other writers own (the autoscaler's ScalingActive) are carried over as they are.
    conditions += [dict(c) for c in (previous or {}).get("conditions", []) if c.get("type") not in C.CONDITION_TYPES]
    old = {c["type"]: c for c in (previous or {}).get("conditions", [])}
    for c in conditions:
        prev = old.get(c["type"])
        c["lastTransitionTime"] = prev.get("lastTransitionTime", now) if prev and prev.get(
            "status") == c["status"] else now
    out = {
        "observedGeneration": gen,
        "replicas": len(live),
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "placeableReplicas": facts.placeable,
        "selector": facts.selector,
        "conditions": conditions,
        "groups": [{"index": g.index, "phase": _phase(g), "ready": g.ready,
                    "readyPods": g.ready_pods, "pods": g.expected_pods, "supernode": g.supernode,
                    "revision": g.revision, "restarts": g.restarts, "message": g.failure,
                    **({"pool": g.pool} if g.pool else {})}
                   for g in groups],
    }
    if facts.pools and not facts.invalid:
        out.update(pool_status(serving, facts.pools))
    return out
