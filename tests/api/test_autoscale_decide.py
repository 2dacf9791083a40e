"""Table tests of the autoscaling decision over signal traces: bursts, noise, missing data, capacity
exhausted, priority preemption, pending guard, scale to zero and the cold-start projection."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from supernode.api import autoscale as A
from supernode.api.models import AutoscalingSpec

# Groups serve 10 requests at once at a 70 % target: 7 requests in flight per group is "full".
POLICY = A.Policy(min_replicas=1, max_replicas=8, max_concurrency=10, queue_depth=4, utilization=0.7,
                  up_window=30, down_window=300, ready_timeout=1800)
NOW = 10_000.0
STEP = 15.0


def trace(fn: Callable[[float], tuple[float | None, float | None]], seconds: float = 600) -> list[A.Sample]:
    """Samples every STEP seconds up to NOW; fn(age) -> (queued, in_flight), age = seconds before NOW."""
    out = []
    t = NOW - seconds
    while t <= NOW:
        queued, in_flight = fn(NOW - t)
        out.append(A.Sample(at=t, queued=queued, in_flight=in_flight))
        t += STEP
    return out


def flat(queued: float, in_flight: float) -> Callable[[float], tuple[float | None, float | None]]:
    return lambda _age: (queued, in_flight)


def fleet(current: int, ready: int | None = None, placeable: int = 8, **kw: object) -> A.Fleet:
    return A.Fleet(current=current, ready=current if ready is None else ready, placeable=placeable,
                   lead_time=300, **kw)  # type: ignore[arg-type]


rng = random.Random(7)
NOISE = [rng.uniform(-2, 2) for _ in range(100)]


def noisy(base: float) -> Callable[[float], tuple[float | None, float | None]]:
    return lambda age: (0.0, max(0.0, base + NOISE[int(age // STEP) % len(NOISE)]))


CASES: list[tuple[str, list[A.Sample], A.Fleet, int, str]] = [
    ("steady load fits", trace(flat(0, 12)), fleet(2), 2, A.STABLE),
    ("sustained queue adds one group", trace(flat(20, 14)), fleet(2), 3, A.SCALE_UP),
    ("a burst shorter than the up window waits",
     trace(lambda age: (30, 14) if age < 20 else (0, 10)), fleet(2), 2, A.STABLE),
    ("a burst that holds for the up window adds one group (never two)",
     trace(lambda age: (60, 14) if age <= 45 else (0, 10)), fleet(2), 3, A.SCALE_UP),
    ("noise around the target neither adds nor drains", trace(noisy(12)), fleet(2), 2, A.STABLE),
    ("idle for the whole down window drains one group", trace(flat(0, 2)), fleet(3), 2, A.SCALE_DOWN),
    ("one busy sample inside the down window keeps the group",
     trace(lambda age: (0, 20) if 200 < age < 215 else (0, 2)), fleet(3), 3, A.STABLE),
    ("never below minReplicas", trace(flat(0, 0)), fleet(1), 1, A.STABLE),
    ("missing newest sample holds (even when idle)",
     [*trace(flat(0, 0))[:-1], A.Sample(at=NOW)], fleet(3), 3, A.SIGNALS_UNAVAILABLE),
    ("stale signals hold", [replace(s, at=s.at - 120) for s in trace(flat(0, 0))], fleet(3), 3,
     A.SIGNALS_UNAVAILABLE),
    ("a hole inside the down window blocks a scale-down",
     [A.Sample(at=s.at) if 100 < NOW - s.at < 130 else s for s in trace(flat(0, 1))], fleet(3), 3, A.STABLE),
    ("too little history blocks a scale-down", trace(flat(0, 1), seconds=120), fleet(3), 3, A.STABLE),
    ("no samples at all hold", [], fleet(2), 2, A.SIGNALS_UNAVAILABLE),
    ("pending scale-up blocks the next one",
     trace(flat(40, 14)), fleet(3, ready=2, pending=True, last_scale_at=NOW - 120, last_direction="Up"), 3,
     A.PENDING),
    ("a pending step past its ready timeout no longer blocks",
     trace(flat(40, 14)), fleet(3, ready=2, pending=True, last_scale_at=NOW - 2000, last_direction="Up"), 4,
     A.SCALE_UP),
    ("no scale-down inside the down window after a scale-up (no reversal)",
     trace(flat(0, 2)), fleet(3, last_scale_at=NOW - 200, last_direction="Up"), 3, A.STABLE),
    ("at maxReplicas", trace(flat(50, 56)), fleet(8), 8, A.AT_MAX),
    ("capacity exhausted, no neighbour to take from", trace(flat(30, 14)), fleet(2, placeable=2), 2,
     A.CAPACITY_LIMITED),
    ("rising demand is met ahead of the cold start",
     trace(lambda age: (0, max(0.0, 13 - age / 30))), fleet(2), 3, A.SCALE_UP),
    ("scale from zero on the first queued request (no up window)",
     trace(lambda age: (1, 0) if age < 1 else (0, 0)), fleet(0), 1, A.SCALE_UP),
]


@pytest.mark.parametrize(("case", "samples", "state", "desired", "reason"), CASES, ids=[c[0] for c in CASES])
def test_decision_over_trace(case: str, samples: list[A.Sample], state: A.Fleet, desired: int, reason: str) -> None:
    d = A.decide(NOW, samples, POLICY, state)
    assert (d.desired, d.reason) == (desired, reason), d.message
    assert abs(d.desired - state.current) <= 1, "one group step at a time"


def test_scale_to_zero_only_with_min_zero_and_full_idle_window() -> None:
    zero = replace(POLICY, min_replicas=0)
    assert A.decide(NOW, trace(flat(0, 0)), zero, fleet(1)).desired == 0
    assert A.decide(NOW, trace(flat(0, 0)), POLICY, fleet(1)).desired == 1
    busy = trace(lambda age: (0, 1) if age > 250 else (0, 0))
    assert A.decide(NOW, busy, zero, fleet(1)).desired == 1


def test_capacity_limited_message_carries_the_numbers() -> None:
    d = A.decide(NOW, trace(flat(30, 14)), POLICY, fleet(2, placeable=2))
    assert "wants" in d.message and "can place 2" in d.message and "(2 running)" in d.message, d.message
    assert d.signals["queued"] == 30 and d.signals["neededGroups"] >= 3


def test_priority_preemption_takes_from_the_lowest_priority_above_its_minimum() -> None:
    pro = replace(POLICY, priority=100)
    neighbours = [A.Neighbour("flash-a", priority=10, current=1, min_replicas=1),  # at its minimum
                  A.Neighbour("flash-b", priority=10, current=3, min_replicas=1),
                  A.Neighbour("premium", priority=200, current=5, min_replicas=0)]  # ranks higher
    d = A.decide(NOW, trace(flat(30, 14)), pro, fleet(2, placeable=2), neighbours)
    assert (d.desired, d.reason, d.preempt) == (3, A.PREEMPTING, "flash-b"), d.message
    low = replace(POLICY, priority=5)
    d = A.decide(NOW, trace(flat(30, 14)), low, fleet(2, placeable=2), neighbours)
    assert (d.desired, d.reason, d.preempt) == (2, A.CAPACITY_LIMITED, None)


def test_extra_targets_trigger_a_scale_up() -> None:
    samples = [replace(s, kv_usage=0.95, queue_wait=20.0, queued_tokens=90_000) for s in trace(flat(0, 12))]
    for extra in ({"kv_usage": 0.8}, {"queue_wait": 5.0}, {"queued_tokens": 10_000}):
        d = A.decide(NOW, samples, replace(POLICY, **extra), fleet(2))  # type: ignore[arg-type]
        assert (d.desired, d.reason) == (3, A.SCALE_UP), (extra, d.message)
    assert A.decide(NOW, samples, POLICY, fleet(2)).reason == A.STABLE  # targets unset: not used


def test_policy_from_spec_uses_the_documented_defaults() -> None:
    spec = AutoscalingSpec.model_validate({"minReplicas": 0, "maxReplicas": 4})
    p = A.Policy.from_spec(spec, max_concurrency=32)
    assert (p.up_window, p.down_window, p.utilization, p.queue_depth) == (30, 300, 0.7, 4)
    assert (p.min_replicas, p.max_replicas, p.max_concurrency, p.priority) == (0, 4, 32, 0)


def test_learned_cold_start_moves_towards_observations() -> None:
    assert A.learn_cold_start(None, 420) == 420
    assert A.learn_cold_start(400, 200) == 300


def test_history_keeps_only_the_needed_window() -> None:
    h = A.History(keep=100)
    for t in range(0, 300, 10):
        h.add(A.Sample(at=float(t), queued=0, in_flight=0))
    assert h.samples[0].at == 190 and h.samples[-1].at == 290
