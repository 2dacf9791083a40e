"""The autoscaling decision, one pure function shared by the operator and `supernode up`.

`decide(now, samples, policy, fleet, neighbours)` turns the router's signals over time (queued
requests and tokens, admitted in-flight requests, KV usage, queue wait), the deployment's current and
ready groups, what the pool can still place, the neighbours sharing that pool and the learned cold-start
lead time into the desired number of replica groups plus a reason. Rules:

- one group step at a time; no new decision while the last one is pending (not Ready, not drained),
  until `ready_timeout` has passed;
- a tolerance band around the utilisation target (up above +10 %, down below -10 % with one group
  fewer) keeps noise from moving the fleet;
- up: every sample of the up window asks for more groups (or the demand trend, projected over the
  cold-start lead time, does); down: every sample of the down window allows one group fewer, the window
  is fully covered by complete samples, and no scale-up happened inside it (no reversals);
- missing or stale data holds the current size (never scales down blind);
- never beyond `max_replicas` or what the pool can place; when the pool is full a lower-priority
  neighbour above its minimum gives up a group (`preempt`), else `CapacityLimited` with the numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from supernode.api.models import AutoscalingSpec

# Reasons (status.autoscaling.reason, Events, `supernode status`).
SCALE_UP, SCALE_DOWN, STABLE, PENDING = "ScaleUp", "ScaleDown", "Stable", "Pending"
AT_MAX, CAPACITY_LIMITED, PREEMPTING = "AtMaxReplicas", "CapacityLimited", "Preempting"
SIGNALS_UNAVAILABLE = "SignalsUnavailable"
MIN_TREND_FIT = 0.6  # R^2 a demand trend's line fit needs before it is projected over the lead time


@dataclass(frozen=True, slots=True)
class Sample:
    """Signals for one deployment at one time; None = not reported (counts as missing data)."""

    at: float
    queued: float | None = None  # requests waiting in the router's queue
    in_flight: float | None = None  # admitted requests running on the engines
    queued_tokens: float | None = None  # prompt tokens of the queued requests
    kv_usage: float | None = None  # mean engine KV-cache usage of ready groups (0-1)
    queue_wait: float | None = None  # seconds the oldest queued request has waited
    spill_rate: float | None = None  # requests/s spilled to another model (informational)

    @property
    def complete(self) -> bool:
        return self.queued is not None and self.in_flight is not None

    @property
    def demand(self) -> float:
        return (self.queued or 0.0) + (self.in_flight or 0.0)


@dataclass(frozen=True, slots=True)
class Policy:
    min_replicas: int
    max_replicas: int
    max_concurrency: int  # requests one group serves at once (engine.maxConcurrency)
    queue_depth: int = 4
    queued_tokens: int | None = None
    kv_usage: float | None = None
    queue_wait: float | None = None
    utilization: float = 0.7
    up_window: float = 30.0
    down_window: float = 300.0
    ready_timeout: float = 1800.0
    priority: int = 0
    tolerance: float = 0.1  # hysteresis: up once the target is exceeded by this share, down once n-1 groups
    # would run this share below it
    stale_after: float = 60.0  # the newest sample older than this counts as missing

    @classmethod
    def from_spec(cls, auto: AutoscalingSpec, max_concurrency: int) -> Policy:
        t, b = auto.target, auto.behavior
        return cls(min_replicas=auto.min_replicas, max_replicas=auto.max_replicas, max_concurrency=max_concurrency,
                   queue_depth=t.queue_depth_per_replica, queued_tokens=t.queued_tokens_per_replica,
                   kv_usage=t.kv_cache_usage, queue_wait=t.time_in_queue_seconds, utilization=t.utilization / 100,
                   up_window=float(b.scale_up_stabilization_seconds),
                   down_window=float(b.scale_down_stabilization_seconds),
                   ready_timeout=float(b.ready_timeout_seconds), priority=auto.priority)


@dataclass(frozen=True, slots=True)
class Fleet:
    current: int  # spec.replicas now
    ready: int  # groups Ready now
    placeable: int  # most groups the pool can hold for this deployment now (planner)
    lead_time: float = 300.0  # learned cold start: seconds from a scale-up to Ready
    pending: bool = False  # the last decision has not settled (a group starting or draining)
    last_scale_at: float | None = None
    last_direction: str | None = None  # "Up" | "Down"


@dataclass(frozen=True, slots=True)
class Neighbour:
    """Another deployment in the same pool."""

    name: str
    priority: int
    current: int
    min_replicas: int


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    reason: str
    message: str
    preempt: str | None = None  # neighbour that gives one group to this deployment
    signals: dict[str, float] = field(default_factory=dict)

    @property
    def direction(self) -> str | None:
        return "Up" if self.reason in (SCALE_UP, PREEMPTING) else "Down" if self.reason == SCALE_DOWN else None


def _groups_for(demand: float, policy: Policy, slack: float = 0.0) -> int:
    per_group = policy.max_concurrency * policy.utilization * (1.0 - slack)
    return max(0, math.ceil(demand / per_group - 1e-9))


def _triggered(s: Sample, policy: Policy, ready: int) -> str:
    """The first per-group target this sample exceeds ("" when none)."""
    base = max(ready, 1)
    if s.queued is not None and s.queued / base > policy.queue_depth:
        return f"queued {s.queued:g} > {policy.queue_depth} per ready group x {base}"
    if policy.queued_tokens and s.queued_tokens is not None and s.queued_tokens / base > policy.queued_tokens:
        return f"queued tokens {s.queued_tokens:g} > {policy.queued_tokens} per ready group x {base}"
    if policy.kv_usage and s.kv_usage is not None and s.kv_usage > policy.kv_usage:
        return f"KV-cache usage {s.kv_usage:.2f} > {policy.kv_usage:.2f}"
    if policy.queue_wait and s.queue_wait is not None and s.queue_wait > policy.queue_wait:
        return f"time in queue {s.queue_wait:.1f}s > {policy.queue_wait:g}s"
    return ""


def needed(s: Sample, policy: Policy, fleet: Fleet, slack: float = 0.0) -> int:
    """Groups this sample asks for: demand sized at the utilisation target; a breached target adds one."""
    n = _groups_for(s.demand, policy, slack)
    if _triggered(s, policy, fleet.ready):
        n = max(n, fleet.current + 1)
    if s.demand > 0:
        n = max(n, 1)  # a cold model with queued requests needs its first group
    return n


def projected_demand(samples: Sequence[Sample], now: float, lead_time: float) -> float | None:
    """Demand extrapolated `lead_time` ahead by a least-squares line over the last lead time of samples;
    None when there are too few samples or the trend is not rising."""
    span = max(lead_time, 60.0)
    pts = [(s.at, s.demand) for s in samples if s.complete and s.at >= now - span]
    if len(pts) < 4 or pts[-1][0] - pts[0][0] < span / 2:
        return None
    mx = sum(t for t, _ in pts) / len(pts)
    my = sum(d for _, d in pts) / len(pts)
    var = sum((t - mx) ** 2 for t, _ in pts)
    if var <= 0:
        return None
    slope = sum((t - mx) * (d - my) for t, d in pts) / var
    spread = sum((d - my) ** 2 for _, d in pts)
    if slope <= 0 or spread <= 0 or slope * slope * var / spread < MIN_TREND_FIT:
        return None  # falling, flat, or a step/noise rather than a trend (poor line fit)
    return my + slope * (now + lead_time - mx)


def _stable_projection(samples: Sequence[Sample], up_samples: Sequence[Sample], lead_time: float) -> float | None:
    """The smallest projection made at each time of the up window: a trend must hold as long as a plain
    signal must before it adds a group (a step change is a burst, not a trend)."""
    out: float | None = None
    for point in up_samples:
        upto = [s for s in samples if s.at <= point.at]
        p = projected_demand(upto, point.at, lead_time)
        if p is None:
            return None
        out = p if out is None else min(out, p)
    return out


def _signals(latest: Sample, up_need: int, predicted: int | None) -> dict[str, float]:
    out = {"queued": latest.queued, "inFlight": latest.in_flight, "queuedTokens": latest.queued_tokens,
           "kvCacheUsage": latest.kv_usage, "queueWaitSeconds": latest.queue_wait, "spillRate": latest.spill_rate}
    values = {k: float(v) for k, v in out.items() if v is not None}
    values["neededGroups"] = float(up_need)
    if predicted is not None:
        values["predictedGroups"] = float(predicted)
    return values


def _donor(neighbours: Sequence[Neighbour], priority: int) -> Neighbour | None:
    """The lowest-priority neighbour above its minimum, if it ranks below `priority`."""
    able = [n for n in neighbours if n.priority < priority and n.current > n.min_replicas]
    return min(able, key=lambda n: (n.priority, -(n.current - n.min_replicas), n.name), default=None)


def decide(now: float, samples: Sequence[Sample], policy: Policy, fleet: Fleet,
           neighbours: Sequence[Neighbour] = ()) -> Decision:
    cur = fleet.current
    latest = samples[-1] if samples else None
    if latest is None or not latest.complete or now - latest.at > policy.stale_after:
        age = "no samples" if latest is None else (
            f"last sample {now - latest.at:.0f}s old" if latest.complete else "last sample incomplete")
        return Decision(cur, SIGNALS_UNAVAILABLE, f"holding {cur} groups: signals unavailable ({age})")
    up_samples = [s for s in samples if s.at >= now - policy.up_window] or [latest]
    up_slack = -policy.tolerance  # a group is added once the target is exceeded by the tolerance
    up_need = min(needed(s, policy, fleet, up_slack) if s.complete else cur for s in up_samples)
    if cur == 0 and latest.demand > 0:
        up_need = max(up_need, 1)  # a cold model's first request: nothing to stabilise, every second counts
    reason_up = _triggered(latest, policy, fleet.ready)
    projection = _stable_projection(samples, up_samples, fleet.lead_time)
    predicted = _groups_for(projection, policy, up_slack) if projection is not None else None
    signals = _signals(latest, up_need, predicted)
    recently_down = fleet.last_direction == "Down" and fleet.last_scale_at is not None and \
        now - fleet.last_scale_at < policy.down_window  # a forecast never reverses a fresh scale-down
    if predicted is not None and predicted > up_need and predicted > cur and latest.demand > 0 and not recently_down:
        up_need, reason_up = predicted, (f"demand {latest.demand:g} rising, {projection:.0f} expected in "
                                         f"{fleet.lead_time:.0f}s (cold start)")
    elif not reason_up:
        reason_up = (f"demand {latest.demand:g} (queued {latest.queued:g} + in flight {latest.in_flight:g}) needs "
                     f"{up_need} groups at {policy.utilization:.0%} of {policy.max_concurrency}")

    def hold(reason: str, message: str) -> Decision:
        return Decision(cur, reason, message, signals=signals)

    if fleet.pending and fleet.last_scale_at is not None and now - fleet.last_scale_at < policy.ready_timeout:
        return hold(PENDING, f"waiting for the last {fleet.last_direction or 'scale'} step to settle "
                             f"({now - fleet.last_scale_at:.0f}s of {policy.ready_timeout:.0f}s)")
    if cur < policy.min_replicas:
        return Decision(cur + 1, SCALE_UP, f"below autoscaling.minReplicas {policy.min_replicas}", signals=signals)
    if cur > policy.max_replicas:
        return Decision(cur - 1, SCALE_DOWN, f"above autoscaling.maxReplicas {policy.max_replicas}",
                        signals=signals)
    if up_need > cur:
        if cur >= policy.max_replicas:
            return hold(AT_MAX, f"{reason_up}; held at autoscaling.maxReplicas {policy.max_replicas}")
        if cur + 1 > fleet.placeable:
            donor = _donor(neighbours, policy.priority)
            if donor is not None:
                return Decision(cur + 1, PREEMPTING, f"{reason_up}; pool full ({fleet.placeable} groups placeable), "
                                f"taking one group from {donor.name} (priority {donor.priority} < {policy.priority}, "
                                f"{donor.current} > min {donor.min_replicas})", preempt=donor.name, signals=signals)
            return hold(CAPACITY_LIMITED, f"{reason_up}; wants {up_need} groups, the pool can place "
                                          f"{fleet.placeable} ({cur} running) and no lower-priority deployment "
                                          "is above its minimum")
        return Decision(cur + 1, SCALE_UP, f"{reason_up}; {cur} -> {cur + 1}", signals=signals)
    if cur > policy.min_replicas:
        blocked = _down_blocked(now, samples, policy, fleet)
        if not blocked:
            window = [s for s in samples if s.at >= now - policy.down_window]
            down_need = max(needed(s, policy, fleet, policy.tolerance) for s in window)
            trend = projected_demand(samples, now, fleet.lead_time)
            if trend is not None:  # a rising trend that would need the group back within the cold start
                down_need = max(down_need, _groups_for(trend, policy, policy.tolerance))
            if down_need < cur:
                peak = max(s.demand for s in window)
                return Decision(cur - 1, SCALE_DOWN, f"peak demand {peak:g} over the last {policy.down_window:.0f}s "
                                f"fits {down_need} groups; {cur} -> {cur - 1}", signals=signals)
        elif blocked.startswith("missing"):
            return hold(STABLE, f"{cur} groups; not scaling down: {blocked}")
    return hold(STABLE, f"{cur} groups fit: {reason_up}")


def _down_blocked(now: float, samples: Sequence[Sample], policy: Policy, fleet: Fleet) -> str:
    """Why a scale-down may not happen now ("" when it may)."""
    if fleet.last_direction == "Up" and fleet.last_scale_at is not None and \
            now - fleet.last_scale_at < policy.down_window:
        return "a scale-up happened inside the down window"
    window = [s for s in samples if s.at >= now - policy.down_window]
    if any(not s.complete for s in window):
        return "missing signal data inside the down window"
    if not samples or samples[0].at > now - policy.down_window + policy.stale_after:
        return "missing signal history: the down window is not covered yet"
    gaps = [b.at - a.at for a, b in itertools.pairwise(window)]
    if any(gap > policy.stale_after for gap in gaps):
        return "missing signal data: a gap inside the down window"
    return ""


def learn_cold_start(previous: float | None, observed: float, weight: float = 0.5) -> float:
    """Lead time update from one observed scale-up → Ready duration (EWMA; the first one replaces the guess)."""
    if previous is None:
        return observed
    return (1 - weight) * previous + weight * observed


@dataclass(slots=True)
class History:
    """Samples of one deployment, oldest first, trimmed to what the longest window needs."""

    keep: float
    samples: list[Sample] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        cutoff = sample.at - self.keep
        while self.samples and self.samples[0].at < cutoff:
            self.samples.pop(0)
