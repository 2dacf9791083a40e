"""`supernode up` runs the operator's autoscaling decision (supernode.api.autoscale) on this machine.

Each autoscaled deployment was laid out for as many groups as fit up to `maxReplicas`; groups beyond
`spec.replicas` are *parked* (planned, not started). Every `interval` the scaler reads the local
router's `/autoscaling/signals` (with `--router-replicas N`, every replica's: each queues on its own),
decides, and asks the supervisor to start a parked group (a flood) or to drain the highest active one
(idleness): the endpoint file marks it draining so the router sends it nothing new, its in-flight
requests finish (the engine reports nothing running or waiting) or `rollout.drainTimeoutSeconds`
passes, then its processes stop and it is parked again. Why each deployment has the size it has is
kept in the state file for `supernode status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from supernode.api import autoscale as A
from supernode.api.models import ModelDeployment

SIGNALS_PATH = "/autoscaling/signals"
DRAIN_SETTLE_SECONDS = 1.0  # the router re-reads the endpoint file within this; no new request after it


class Units(Protocol):
    """What the scaler needs from the supervisor."""

    def active(self, deployment: str) -> list[str]: ...  # started, not draining, in group order
    def parked_units(self, deployment: str) -> list[str]: ...
    def is_ready(self, unit: str) -> bool: ...
    def draining(self) -> Mapping[str, float]: ...  # unit -> drain start (monotonic)
    def activate(self, unit: str) -> None: ...
    def drain(self, unit: str) -> None: ...
    def finish_drain(self, unit: str) -> None: ...
    def busy(self, unit: str) -> float | None: ...  # running + waiting on its engine; None: no answer


@dataclass
class Scaled:
    md: ModelDeployment
    policy: A.Policy
    history: A.History
    lead_time: float
    learned: bool = False
    last_scale_at: float | None = None
    last_direction: str | None = None
    pending_since: float | None = None  # a scale-up not Ready yet
    why: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> set[str]:
        return {self.md.spec.model.name, *self.md.spec.model.aliases}


def _sample(now: float, body: Mapping[str, Any] | None, names: set[str], refused: dict[str, float]) -> A.Sample:
    if body is None:
        return A.Sample(at=now)
    queued = in_flight = tokens = wait = 0.0
    total_refused = 0.0
    for pool in body.get("pools") or []:
        if pool.get("model") in names:
            queued += float(pool.get("queued", 0))
            in_flight += float(pool.get("inFlight", 0))
            tokens += float(pool.get("queuedTokens", 0))
            wait = max(wait, float(pool.get("oldestWaitSeconds", 0.0)))
            total_refused += float(pool.get("noCapacityTotal", 0))
    key = min(names)
    before = refused.get(key)
    refused[key] = total_refused
    fresh = 0.0 if before is None or total_refused < before else total_refused - before
    return A.Sample(at=now, queued=queued + fresh, in_flight=in_flight, queued_tokens=tokens, queue_wait=wait)


def merge_signals(bodies: Sequence[Mapping[str, Any] | None]) -> Mapping[str, Any] | None:
    """The signals of several router replicas as one body: their pools side by side (``_sample`` sums
    the pools of a model); None when no replica answered."""
    answered = [b for b in bodies if b is not None]
    if not answered:
        return None
    return {"pools": [pool for b in answered for pool in b.get("pools") or []]}


class LocalScaler:
    def __init__(self, deployments: Sequence[ModelDeployment], signal_urls: Callable[[], Sequence[str]], *,
                 interval: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = print) -> None:
        self.signal_urls = signal_urls  # the ops URL of every router replica, read at each step
        self.interval = interval
        self.clock = clock
        self.say = say
        self.scaled: dict[str, Scaled] = {}
        for md in deployments:
            auto = md.spec.autoscaling
            if auto is None or auto.mode.value != "Builtin" or md.spec.pools:  # pools: the operator only
                continue
            policy = A.Policy.from_spec(auto, md.spec.engine.max_concurrency)
            keep = max(policy.down_window, float(auto.behavior.cold_start_seconds), 60.0) + 120.0
            self.scaled[md.metadata.name] = Scaled(md, policy, A.History(keep=keep),
                                                   float(auto.behavior.cold_start_seconds))
        self._next = 0.0
        self._refused: dict[str, float] = {}
        self._client = httpx.Client(timeout=1.0, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: s.why for name, s in self.scaled.items()}

    def _signals(self) -> Mapping[str, Any] | None:
        return merge_signals([self._signals_of(url) for url in self.signal_urls()])

    def _signals_of(self, url: str) -> Mapping[str, Any] | None:
        try:
            r = self._client.get(url + SIGNALS_PATH)
            return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError):
            return None

    def step(self, units: Units) -> None:
        now = self.clock()
        self._finish_drains(units, now)
        if now < self._next or not self.scaled:
            return
        self._next = now + self.interval
        body = self._signals()
        for name, s in self.scaled.items():
            self._decide(name, s, units, body, now)

    def _finish_drains(self, units: Units, now: float) -> None:
        for unit, since in list(units.draining().items()):
            s = next((x for x in self.scaled.values() if unit.startswith(f"{x.md.metadata.name}/")), None)
            timeout = float(s.md.spec.rollout.drain_timeout_seconds) if s else 0.0
            busy = units.busy(unit)
            if now - since >= DRAIN_SETTLE_SECONDS and (busy == 0 or now - since >= timeout):
                units.finish_drain(unit)
                self.say(f"{unit}: drained ({'idle' if busy == 0 else f'drain timeout {timeout:g}s'}), stopped")

    def _decide(self, name: str, s: Scaled, units: Units, body: Mapping[str, Any] | None, now: float) -> None:
        active, parked = units.active(name), units.parked_units(name)
        ready = sum(units.is_ready(u) for u in active)
        draining = any(u.startswith(f"{name}/") for u in units.draining())
        if s.pending_since is not None and ready >= len(active):
            s.lead_time = A.learn_cold_start(s.lead_time if s.learned else None, now - s.pending_since)
            s.learned, s.pending_since = True, None
        s.history.add(_sample(now, body, s.names, self._refused))
        fleet = A.Fleet(current=len(active), ready=ready, placeable=len(active) + len(parked), lead_time=s.lead_time,
                        pending=ready < len(active) or draining, last_scale_at=s.last_scale_at,
                        last_direction=s.last_direction)
        d = A.decide(now, s.history.samples, s.policy, fleet)
        if d.desired > len(active) and parked:
            units.activate(parked[0])
            s.pending_since = now
            self.say(f"{name}: scale up {len(active)} -> {d.desired}: {d.message} (starting {parked[0]})")
        elif d.desired < len(active):
            units.drain(active[-1])
            self.say(f"{name}: scale down {len(active)} -> {d.desired}: {d.message} (draining {active[-1]})")
        if d.direction and d.desired != len(active):
            s.last_scale_at, s.last_direction = now, d.direction
        s.why = {"desired": d.desired, "active": len(active), "ready": ready, "reason": d.reason,
                 "message": d.message, "coldStartSeconds": round(s.lead_time, 1) if s.learned else None,
                 "signals": {k: round(v, 3) for k, v in d.signals.items()}}
