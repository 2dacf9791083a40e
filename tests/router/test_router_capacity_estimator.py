"""Measured capacity, pure: the per-endpoint throughput estimate (decay, bad samples) and how `reweigh` turns
estimates into the weights routing divides load by (declared weight as the prior, sum kept, clamps)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from supernode.api.endpoints import Endpoint
from supernode.router.routing.capacity import Throughput, reweigh, work_tokens
from supernode.router.routing.state import EndpointState

# (case, samples as (tokens, seconds, at), half-life, expected rate, expected sample count)
THROUGHPUT_CASES = [
    ("no sample: rate 0", [], 60.0, 0.0, 0),
    ("one request: its tokens over its seconds", [(100, 2.0, 0.0)], 60.0, 50.0, 1),
    ("requests at one instant sum before dividing (a long request weighs more)",
     [(100, 1.0, 0.0), (100, 3.0, 0.0)], 60.0, 50.0, 2),
    ("an old sample counts half after one half-life", [(100, 1.0, 0.0), (100, 4.0, 60.0)], 60.0,
     (50 + 100) / (0.5 + 4.0), 2),
    ("long past samples fade: the rate follows the new speed", [(100, 1.0, 0.0), (10, 1.0, 6000.0)], 60.0,
     pytest.approx(10.0, rel=1e-6), 2),
    ("zero or negative seconds, negative or non-finite tokens are ignored",
     [(100, 0.0, 0.0), (-5, 1.0, 0.0), (math.inf, 1.0, 0.0), (math.nan, 1.0, 0.0), (10, math.inf, 0.0),
      (30, 1.0, 0.0)], 60.0, 30.0, 1),
    ("a sample from the past (clock skew between tasks) does not grow the old ones",
     [(100, 1.0, 10.0), (100, 1.0, 5.0)], 60.0, 100.0, 2),
    ("an idle gap decays tokens and seconds alike: the rate holds", [(100, 1.0, 0.0)] * 3 + [(100, 1.0, 9999.0)],
     60.0, pytest.approx(100.0), 4),
]


@pytest.mark.parametrize(("case", "samples", "half_life", "rate", "count"), THROUGHPUT_CASES,
                         ids=[c[0] for c in THROUGHPUT_CASES])
def test_throughput(case: str, samples: list[tuple[float, float, float]], half_life: float, rate: float,
                    count: int) -> None:
    t = Throughput()
    for tokens, seconds, at in samples:
        t.add(tokens, seconds, at, half_life)
    assert t.rate == rate and t.samples == count


@dataclass
class E:
    declared: float
    slots: int = 32
    rate: float = 0.0  # tokens per request-second measured
    samples: int = 0
    throughput: Throughput = field(default_factory=Throughput)
    measured: float = -1.0  # reweigh must always set it

    def __post_init__(self) -> None:
        self.throughput = Throughput(tokens=self.rate * 10, seconds=10.0 if self.rate else 0.0,
                                     samples=self.samples)


Q = 2 ** 0.25  # one step of a measured weight (a quarter doubling)

# (case, endpoints, min_samples, expected measured weights; 0 = not measured, the declared weight holds)
REWEIGH_CASES = [
    ("nothing measured: every endpoint keeps its declared weight",
     [E(1.0), E(2.0)], 5, [0.0, 0.0]),
    ("too few samples: still the prior", [E(1.0, rate=50, samples=4), E(1.0, rate=10, samples=4)], 5, [0.0, 0.0]),
    ("both measured, three times the rate: three times the weight (in steps), about the declared sum",
     [E(1.0, rate=90, samples=5), E(1.0, rate=30, samples=5)], 5, [Q**2, Q**-4]),
    ("a wrong declaration is overruled by the measurement",
     [E(4.0, rate=10, samples=9), E(1.0, rate=40, samples=9)], 5, [1.0, 4.0]),
    ("equal speeds with measurement noise keep exactly their (equal) declared weights",
     [E(1.0, rate=100, samples=9), E(1.0, rate=93, samples=9), E(1.0, rate=106, samples=9)], 5, [1.0, 1.0, 1.0]),
    ("more request slots at the same rate: more capacity",
     [E(1.0, slots=96, rate=20, samples=5), E(1.0, slots=32, rate=20, samples=5)], 5, [Q**2, Q**-4]),
    ("one measured among unmeasured: it keeps its declared scale until a peer is measured",
     [E(2.0, rate=99, samples=5), E(1.0)], 5, [2.0, 0.0]),
    ("two measured, one not: the measured share their declared sum, the third keeps its prior",
     [E(1.0, rate=30, samples=5), E(1.0, rate=10, samples=5), E(3.0, samples=1)], 5, [Q**2, Q**-4, 0.0]),
    ("a measured rate of zero (no tokens) is not a measurement",
     [E(1.0, rate=0, samples=50), E(2.0, rate=10, samples=50)], 5, [0.0, 2.0]),
    ("extreme ratios are clamped", [E(1000.0, rate=1e9, samples=5), E(1000.0, rate=1e-9, samples=5)], 5,
     [1000.0, 0.001]),
]


@pytest.mark.parametrize(("case", "endpoints", "min_samples", "expected"), REWEIGH_CASES,
                         ids=[c[0] for c in REWEIGH_CASES])
def test_reweigh(case: str, endpoints: list[E], min_samples: int, expected: list[float]) -> None:
    reweigh(endpoints, min_samples)
    assert [e.measured for e in endpoints] == pytest.approx(expected)


def test_endpoint_state_uses_the_measured_weight_once_there_is_one() -> None:
    s = EndpointState(endpoint=Endpoint(url="http://127.0.0.1:1", model="m", capacity_weight=3.0, max_concurrency=8))
    assert (s.declared, s.slots, s.capacity) == (3.0, 8, 3.0)  # the prior
    s.measured = 0.5
    assert s.capacity == 0.5


@pytest.mark.parametrize(("completion", "prompt", "cached", "weight", "expected"), [
    (10, 1000, 0, 0.0, 10.0),  # decode only (the default)
    (10, 1000, 200, 0.1, 90.0),  # uncached prompt tokens count at the prefill weight
    (10, 100, 500, 0.5, 10.0),  # more cached than prompt (bad usage): no negative prefill
])
def test_work_tokens(completion: int, prompt: int, cached: int, weight: float, expected: float) -> None:
    assert work_tokens(completion, prompt, cached, weight) == expected


def test_signals_report_each_pools_capacity_per_group_and_draining_groups_with_their_pool() -> None:
    from supernode.router.demand import draining_endpoints, pool_capacity
    from supernode.router.routing.state import EndpointTable

    def e(url: str, pool: str, weight: float, **kw: object) -> Endpoint:
        return Endpoint(url=url, model="m", deployment="llm/v4", pool=pool, capacity_weight=weight, **kw)  # type: ignore[arg-type]

    table = EndpointTable()
    table.update([e("http://a", "h200", 2.0), e("http://b", "h200", 2.0), e("http://c", "ascend", 1.0),
                  e("http://d", "ascend", 1.0, draining=True), e("http://x", "ascend", 9.0, ready=False)])
    b = table.get("http://b")
    assert b is not None
    b.measured = 3.0  # measured beats declared
    assert pool_capacity(table) == [{"deployment": "llm/v4", "pool": "ascend", "groups": 1, "weight": 1.0},
                                    {"deployment": "llm/v4", "pool": "h200", "groups": 2, "weight": 2.5}]
    assert [(d["pool"], d["group"]) for d in draining_endpoints(table)] == [("ascend", 0)]
