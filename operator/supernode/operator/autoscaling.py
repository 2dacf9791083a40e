"""What the autoscaler reads from and writes to ModelDeployments (pure): the fleet state of one
deployment, its pool neighbours, `status.autoscaling` and the `ScalingActive` condition."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from supernode.api import autoscale as A
from supernode.api.models import AutoscalingMode, ModelDeployment
from supernode.api.pools import total_replicas
from supernode.operator.observe import format_time, parse_time

COND_SCALING_ACTIVE = "ScalingActive"  # False while signals are unavailable (the size is held)


def pool_of(md: ModelDeployment) -> str:
    """Deployments in one pool share its supernodes: `autoscaling.pool`, else the accelerator type."""
    auto = md.spec.autoscaling
    return (auto.pool if auto and auto.pool else None) or md.spec.accelerator.type.value


@dataclass(frozen=True, slots=True)
class View:
    """One autoscaled deployment as the decision needs it."""

    namespace: str
    name: str
    md: ModelDeployment
    replicas: int
    ready: int
    pending: bool
    last_scale_at: float | None
    last_direction: str | None
    lead_time: float
    lead_learned: bool = False  # lead_time was learned (status), not the spec's first guess
    live: int = 0  # groups that exist (status.replicas); replicas - live are wanted but not placed yet

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def pool(self) -> str:
        return pool_of(self.md)


def view_of(body: Mapping[str, Any]) -> View | None:
    """None when the object is not a valid, autoscaled (Builtin or External) deployment."""
    try:
        md = ModelDeployment.from_obj({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body})
    except (ValueError, KeyError):
        return None
    auto = md.spec.autoscaling
    if auto is None:
        return None
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    mine = status.get("autoscaling") or {}
    replicas = total_replicas(md)  # with pools: every pool's groups together
    settled = (status.get("observedGeneration") == meta.get("generation") and status.get("replicas") == replicas
               and int(status.get("readyReplicas", 0)) >= replicas)
    lead = mine.get("coldStartSeconds")
    return View(namespace=meta.get("namespace") or "default", name=meta["name"], md=md, replicas=replicas,
                ready=int(status.get("readyReplicas", 0)), pending=not settled,
                last_scale_at=parse_time(mine.get("lastScaleTime")), last_direction=mine.get("lastScaleDirection"),
                lead_time=float(lead) if lead is not None else float(auto.behavior.cold_start_seconds),
                lead_learned=lead is not None, live=int(status.get("replicas", 0)))


def neighbours(me: View, views: Iterable[View]) -> list[A.Neighbour]:
    """Builtin-mode deployments sharing my pool (External ones are driven by someone else). A deployment with
    spec.pools is nobody's neighbour: preemption takes a group through spec.replicas, which its pools ignore."""
    out = []
    for v in views:
        auto = v.md.spec.autoscaling
        if v.key == me.key or v.pool != me.pool or auto is None or auto.mode != AutoscalingMode.BUILTIN \
                or v.md.spec.pools:
            continue
        out.append(A.Neighbour(v.key, auto.priority, v.replicas, auto.min_replicas))
    return out


def promised(me: View, views: Iterable[View]) -> int:
    """Groups other deployments of my pool were given but have not placed yet (a preemptor waiting for the
    supernode its donor is draining): capacity that looks free but is spoken for."""
    return sum(max(0, v.replicas - v.live) for v in views if v.key != me.key and v.pool == me.pool)


def fleet(view: View, placeable: int) -> A.Fleet:
    return A.Fleet(current=view.replicas, ready=view.ready, placeable=placeable, lead_time=view.lead_time,
                   pending=view.pending, last_scale_at=view.last_scale_at, last_direction=view.last_direction)


def autoscaling_status(view: View, decision: A.Decision, sample: A.Sample, now: float, *,
                       scaled: bool, lead_time: float) -> dict[str, Any]:
    previous = view.last_scale_at
    auto = view.md.spec.autoscaling
    return {
        "mode": auto.mode.value if auto else "",
        "desiredReplicas": decision.desired,
        "reason": decision.reason,
        "message": decision.message,
        "lastScaleTime": format_time(now) if scaled else (format_time(previous) if previous else None),
        "lastScaleDirection": decision.direction if scaled else view.last_direction,
        "coldStartSeconds": round(lead_time, 1) if lead_time != view.lead_time or view.lead_learned else None,
        "signals": {k: round(v, 4) for k, v in decision.signals.items()},
        "signalsTime": format_time(sample.at) if sample.complete else None,
    }


def with_condition(conditions: Iterable[Mapping[str, Any]], ok: bool, reason: str, message: str,
                   generation: int | None, now: float) -> list[dict[str, Any]]:
    """The status conditions with `ScalingActive` set (its transition time kept while unchanged)."""
    out, previous = [], None
    for c in conditions:
        if c.get("type") == COND_SCALING_ACTIVE:
            previous = c
        else:
            out.append(dict(c))
    status = "True" if ok else "False"
    since = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
    out.append({"type": COND_SCALING_ACTIVE, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": since or format_time(now), "observedGeneration": generation})
    return out


def learned_lead_time(view: View, now: float, learned_for: float | None) -> tuple[float, float | None]:
    """(lead time, the scale-up it was learned from): a scale-up that has just settled teaches how long a
    group of this deployment takes to become Ready; each scale-up teaches once."""
    if view.last_direction != "Up" or view.last_scale_at is None or view.pending or learned_for == view.last_scale_at:
        return view.lead_time, learned_for
    observed = max(0.0, now - view.last_scale_at)
    return A.learn_cold_start(view.lead_time if view.lead_learned else None, observed), view.last_scale_at
