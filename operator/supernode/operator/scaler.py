"""The autoscaler's executor: poll the routers' signals, run the shared decision, write the result.

Runs from one operator-wide loop over the ModelDeployment index (handlers.py; no per-object kopf timer,
hence no finalizer), so only the elected leader decides (kopf runs only there). One lock serialises
the decisions: a preemption and its neighbour's own decision never interleave. A decision writes
`spec.replicas` (the existing reconcile path then creates a group, or marks the highest one draining —
the router stops sending it new requests — and deletes it once its in-flight requests finished or
`rollout.drainTimeoutSeconds` passed), `status.autoscaling`, the `ScalingActive` condition, and Events
(on both deployments for a preemption). Mode External only exports the signals as Prometheus gauges
for HPA/KEDA and leaves `spec.replicas` to them. The signals are read on each router pod's ops port,
or, with `prometheus_url`, from a Prometheus that scrapes the routers (promsource.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from supernode.api import autoscale as A
from supernode.api import constants as C
from supernode.api.models import AutoscalingMode, ModelDeployment
from supernode.api.pools import pool_views
from supernode.operator import autoscaling as S
from supernode.operator import demand
from supernode.operator import naming as N
from supernode.operator import pool_scaling as PS
from supernode.operator.drain_watch import mark_drained
from supernode.operator.inventory import inventory_from_k8s
from supernode.operator.kube import MODEL_DEPLOYMENTS, KubeClient
from supernode.operator.observe import format_time, parse_time
from supernode.operator.planner import plan as make_plan
from supernode.operator.router_poll import RouterPoll

log = logging.getLogger("supernode.operator.autoscaler")
WRITE_MEMORY_SECONDS = 60.0  # how long our own spec.replicas writes override a lagging watch


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    router_namespace: str = "supernode-system"  # where the router Service lives
    router_service: str = "supernode-router-metrics"  # any Service selecting the router pods
    router_ops_port: int = 9090  # the router pods' ops port (server.metrics_port): /autoscaling/signals
    interval_seconds: float = 15.0
    timeout_seconds: float = 2.0
    router_urls: tuple[str, ...] = ()  # fixed signal URLs instead of Service discovery
    prometheus_url: str = ""  # ask this Prometheus for the routers' series instead of the routers (promsource.py)
    prometheus_selector: str = ""  # label matchers added to every query, e.g. namespace="supernode-system"


@dataclass
class Autoscaler:
    client: KubeClient
    config: AutoscalerConfig
    supernode_label: str | None = None
    registry: CollectorRegistry | None = None
    clock: Callable[[], float] = time.time
    lws: Callable[[], Awaitable[bool]] | None = None  # LeaderWorkerSet installed? (the reconciler's cached check)
    histories: dict[str, A.History] = field(default_factory=dict)
    totals: demand.Totals = field(default_factory=demand.Totals)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _poll: tuple[float, dict[str, dict[str, Any]], str] | None = None
    _learned: dict[str, float | None] = field(default_factory=dict)
    routers: RouterPoll = field(init=False)
    _gauges: tuple[Gauge, Gauge] | None = None
    # spec.replicas this autoscaler wrote (key -> (replicas, when)): watch events lag behind our own
    # patches, and a decision on a stale neighbour would take the same supernode twice.
    _wrote: dict[str, tuple[int, float]] = field(default_factory=dict)
    _wrote_pools: dict[str, dict[str, int]] = field(default_factory=dict)  # the same, per pool (spec.pools)

    def __post_init__(self) -> None:
        self.routers = RouterPoll(self.client, self.config)
        if self.registry is not None:
            self._gauges = (
                Gauge("supernode_autoscaling_signal", "Router signals per deployment (queued, inFlight, "
                      "queuedTokens, kvCacheUsage, queueWaitSeconds, spillRate, neededGroups)",
                      ["namespace", "deployment", "signal"], registry=self.registry),
                Gauge("supernode_autoscaling_desired_groups", "Replica groups the autoscaler wants",
                      ["namespace", "deployment"], registry=self.registry))

    async def close(self) -> None:
        await self.routers.close()

    def forget(self, key: str) -> None:
        self.histories.pop(key, None)
        self._learned.pop(key, None)
        self._wrote_pools.pop(key, None)

    # --- signals ---------------------------------------------------------------------------------
    async def poll(self, now: float) -> tuple[dict[str, dict[str, Any]], str]:
        """Every router's answer (URL → JSON) and "" — or what went wrong; one poll serves all deployments
        deciding within half an interval. A router that does not answer makes the whole poll missing data."""
        if self._poll is not None and now - self._poll[0] < self.config.interval_seconds / 2:
            return self._poll[1], self._poll[2]
        if self.config.prometheus_url:
            answers, error = await self.routers.prometheus(self.config.prometheus_url,
                                                           self.config.prometheus_selector)
        else:
            answers, error = await self.routers.routers()
        self._poll = (now, answers, error)
        return answers, error

    # --- one deployment ----------------------------------------------------------------------------
    def _placeable(self, view: S.View, nodes: list[Mapping[str, Any]], pods: list[Mapping[str, Any]],
                   md: ModelDeployment | None = None, replicas: int | None = None, top: int | None = None) -> int:
        """Most groups the pool can hold for this deployment now (planned with one more than it has); `md`,
        `replicas`, `top`: one pool's view, its groups and its maximum (its own pods free, other pools' not)."""
        auto = view.md.spec.autoscaling
        md, replicas = md or view.md, view.replicas if replicas is None else replicas
        if auto is None or replicas >= (auto.max_replicas if top is None else top):
            return replicas
        mine, pool = N.label_value(view.name), N.pool_labels(md).get(C.LABEL_POOL, "")
        others = [p for p in pods if not ((p.get("metadata") or {}).get("namespace") == view.namespace and (
            (p.get("metadata") or {}).get("labels") or {}).get(C.LABEL_DEPLOYMENT) == mine and N.pool_of(p) == pool)]
        bigger = md.model_copy(update={"spec": md.spec.model_copy(update={"replicas": replicas + 1})})
        plan = make_plan(bigger, inventory_from_k8s(nodes, others), {}, supernode_label=self.supernode_label)
        return plan.capacity.placeable

    def _pool_rooms(self, view: S.View, nodes: list[Mapping[str, Any]], pods: list[Mapping[str, Any]],
                    answers: Mapping[str, Mapping[str, Any]]) -> list[PS.PoolRoom]:
        """Each pool's groups (ours while the watch lags), bounds, spare room and capacity per group."""
        lagging = view.key in self._wrote and sum(v.md.spec.replicas for v in pool_views(view.md)) != view.replicas
        wrote = self._wrote_pools.get(view.key) if lagging else None  # _fresh: the total we wrote, not the spec's
        first = PS.rooms(view.md, {}, {}, wrote)
        placeable = {r.name: self._placeable(view, nodes, pods, v.md, r.replicas, r.max)
                     for r, v in zip(first, pool_views(view.md), strict=True)}
        return PS.rooms(view.md, placeable, demand.pool_capacity(view.key, answers), wrote)

    def _fresh(self, view: S.View, now: float) -> S.View:
        """The view with what we wrote ourselves, until the watch catches up (then pending: not settled)."""
        wrote = self._wrote.get(view.key)
        if wrote is None or now - wrote[1] > WRITE_MEMORY_SECONDS:
            self._wrote.pop(view.key, None)
            return view
        if view.replicas == wrote[0] and not view.pending:
            return view
        return replace(view, replicas=wrote[0], pending=True)

    async def tick(self, body: Mapping[str, Any], nodes: list[Mapping[str, Any]], pods: list[Mapping[str, Any]],
                   all_bodies: Iterable[Mapping[str, Any]]) -> A.Decision | None:
        view = S.view_of(body)
        if view is None:
            return None
        async with self._lock:
            return await self._tick(body, self._fresh(view, self.clock()), nodes, pods, all_bodies)

    async def _tick(self, body: Mapping[str, Any], view: S.View, nodes: list[Mapping[str, Any]],
                    pods: list[Mapping[str, Any]], all_bodies: Iterable[Mapping[str, Any]]) -> A.Decision:
        now = self.clock()
        auto = view.md.spec.autoscaling
        assert auto is not None
        answers, error = await self.poll(now)
        names = {view.md.spec.model.name, *view.md.spec.model.aliases}
        sample = A.Sample(at=now) if error else demand.sample_for(names, answers, now, self.totals)
        keep = max(auto.behavior.scale_down_stabilization_seconds, view.lead_time, 60.0) + 120.0
        history = self.histories.setdefault(view.key, A.History(keep=keep))
        history.keep = keep
        history.add(sample)
        lead, learned_for = S.learned_lead_time(view, now, self._learned.get(view.key))
        self._learned[view.key] = learned_for
        view = replace(view, lead_time=lead, lead_learned=view.lead_learned or learned_for is not None)
        policy = A.Policy.from_spec(auto, PS.group_concurrency(view.md))
        if view.md.spec.pools:  # every pool's groups together, within the pools' bounds
            lo, hi = PS.bounds(view.md)
            policy = replace(policy, min_replicas=lo, max_replicas=hi)
        basis = str((body.get("metadata") or {}).get("resourceVersion") or "")  # status writes are guarded by it
        if auto.mode == AutoscalingMode.EXTERNAL:
            decision = A.decide(now, history.samples, replace(policy, min_replicas=view.replicas,
                                                              max_replicas=view.replicas),
                                S.fleet(view, view.replicas))
            decision = replace(decision, reason="External",
                               message="HPA/KEDA drive spec.replicas through /scale; signals are exported")
        elif view.md.spec.pools:  # no preemption across pools: a mixed deployment neither takes nor gives
            rooms = self._pool_rooms(view, nodes, pods, answers)
            placeable = sum(min(r.max, max(r.replicas, r.placeable)) for r in rooms)
            decision = A.decide(now, history.samples, policy, S.fleet(view, placeable))
            decision.signals["placeableGroups"] = float(placeable)
            basis = await self._apply_pools(body, view, decision, rooms) or basis
        else:
            others = [self._fresh(v, now) for b in all_bodies if (v := S.view_of(b)) is not None]
            room = self._placeable(view, nodes, pods) - view.replicas
            placeable = view.replicas + max(0, room - S.promised(view, others))
            decision = A.decide(now, history.samples, policy, S.fleet(view, placeable), S.neighbours(view, others))
            decision.signals["placeableGroups"] = float(placeable)
            basis = await self._apply(body, view, decision, others) or basis
        self._export(view, decision)
        await self._write_status(body, view, decision, sample, now, error, basis)
        if not error:
            lws = self.lws is not None and await self.lws()
            for pool, idle in demand.idle_draining_by_pool(view.key, answers).items():
                await mark_drained(self.client, body, idle, lws, pool)
        return decision

    async def _apply(self, body: Mapping[str, Any], view: S.View, decision: A.Decision,
                     others: list[S.View]) -> str | None:
        """Scale (when the decision says so); returns the resourceVersion the spec write left, if any."""
        if decision.desired == view.replicas:
            return None
        donor = next((v for v in others if v.key == decision.preempt), None)
        if donor is not None:  # the donor drains first; the freed supernode is promised to this deployment
            await self._preempt(body, view, donor)
        scaled = await self.client.patch(MODEL_DEPLOYMENTS, view.namespace, view.name,
                                         {"spec": {"replicas": decision.desired}})
        self._wrote[view.key] = (decision.desired, self.clock())
        verb = "ScaledUp" if decision.desired > view.replicas else "ScaledDown"
        log.info("%s %s: %d -> %d: %s", view.key, verb, view.replicas, decision.desired, decision.message)
        await self.client.post_event(dict(body), "Normal", verb,
                                     f"{view.replicas} -> {decision.desired} groups: {decision.message}")
        return str((scaled.get("metadata") or {}).get("resourceVersion") or "") or None

    async def _apply_pools(self, body: Mapping[str, Any], view: S.View, decision: A.Decision,
                           rooms: list[PS.PoolRoom]) -> str | None:
        """Share the decided total out per pool (pool_scaling.split) and write every pool's replicas at once;
        returns the resourceVersion that write left, if any."""
        before = {r.name: r.replicas for r in rooms}
        after = PS.split(decision.desired, rooms)
        if after == before:
            return None
        raw = [dict(p) for p in (body.get("spec") or {}).get("pools") or []]
        if [p.get("name") for p in raw] != list(after):
            return None  # the pools changed under us: decide again on the next tick
        for p in raw:
            p["replicas"] = after[p["name"]]
        scaled = await self.client.patch(MODEL_DEPLOYMENTS, view.namespace, view.name, {"spec": {"pools": raw}})
        total = sum(after.values())
        self._wrote[view.key] = (total, self.clock())
        self._wrote_pools[view.key] = after
        verb = "ScaledUp" if total > view.replicas else "ScaledDown" if total < view.replicas else "Rebalanced"
        change = PS.describe(before, after)
        log.info("%s %s: %d -> %d (%s): %s", view.key, verb, view.replicas, total, change, decision.message)
        await self.client.post_event(dict(body), "Normal", verb,
                                     f"{view.replicas} -> {total} groups ({change}): {decision.message}")
        return str((scaled.get("metadata") or {}).get("resourceVersion") or "") or None

    async def _preempt(self, body: Mapping[str, Any], view: S.View, donor: S.View) -> None:
        now = self.clock()
        await self.client.patch(MODEL_DEPLOYMENTS, donor.namespace, donor.name,
                                {"spec": {"replicas": donor.replicas - 1}})
        self._wrote[donor.key] = (donor.replicas - 1, now)
        await self.client.patch_status(donor.namespace, donor.name, {"autoscaling": {
            "lastScaleTime": format_time(now), "lastScaleDirection": "Down", "reason": "Preempted",
            "desiredReplicas": donor.replicas - 1,
            "message": f"one group given to {view.key} (priority {view.md.spec.autoscaling.priority})"}})  # type: ignore[union-attr]
        donor_body = {"apiVersion": C.API_VERSION, "kind": C.KIND, "metadata": {
            "name": donor.name, "namespace": donor.namespace, "uid": donor.md.metadata.uid or ""}}
        await self.client.post_event(donor_body, "Normal", "GroupPreempted",
                                     f"{donor.replicas} -> {donor.replicas - 1} groups: the pool's supernode goes "
                                     f"to higher-priority {view.key}")
        await self.client.post_event(dict(body), "Normal", "Preempting",
                                     f"took one group's supernode from lower-priority {donor.key}")

    def _export(self, view: S.View, decision: A.Decision) -> None:
        if self._gauges is None:
            return
        signal, desired = self._gauges
        for name, value in decision.signals.items():
            signal.labels(view.namespace, view.name, name).set(value)
        desired.labels(view.namespace, view.name).set(decision.desired)

    async def _write_status(self, body: Mapping[str, Any], view: S.View, decision: A.Decision, sample: A.Sample,
                            now: float, error: str, basis: str = "") -> None:
        """`basis`: the resourceVersion the conditions were read at; a write from an older read is refused (409)
        and the next interval decides again from the latest object."""
        status = body.get("status") or {}
        scaled = decision.desired != view.replicas
        ok = decision.reason != A.SIGNALS_UNAVAILABLE
        message = decision.message + (f" ({error})" if error else "")
        new = S.autoscaling_status(view, replace(decision, message=message), sample, now, scaled=scaled,
                                   lead_time=view.lead_time)
        conditions = S.with_condition(status.get("conditions") or [], ok, decision.reason if not ok else "Deciding",
                                      message if not ok else f"{decision.reason}: {decision.message}",
                                      (body.get("metadata") or {}).get("generation"), now)
        old = status.get("autoscaling") or {}
        if not scaled and _unchanged(old, new, status.get("conditions") or [], conditions[-1], now):
            return  # nothing a reader acts on changed, and the signals shown are fresh enough: no write
        if not ok and old.get("reason") != A.SIGNALS_UNAVAILABLE:
            await self.client.post_event(dict(body), "Warning", "SignalsUnavailable", message)
        await self.client.patch_status(view.namespace, view.name, {"autoscaling": new, "conditions": conditions},
                                       resource_version=basis or None)


SIGNALS_REFRESH_SECONDS = 60.0  # status.autoscaling.signals is rewritten at least this often


def _unchanged(old: Mapping[str, Any], new: Mapping[str, Any], conditions: Iterable[Mapping[str, Any]],
               mine: Mapping[str, Any], now: float) -> bool:
    volatile = ("signals", "signalsTime", "message")
    same = {k: v for k, v in old.items() if k not in volatile} == {k: v for k, v in new.items() if k not in volatile}
    shown = parse_time(old.get("signalsTime"))
    fresh = (shown is not None and now - shown < SIGNALS_REFRESH_SECONDS) or new.get("signalsTime") is None
    prev = next((c for c in conditions if c.get("type") == S.COND_SCALING_ACTIVE), {})
    return same and fresh and (prev.get("status"), prev.get("reason")) == (mine["status"], mine["reason"])
