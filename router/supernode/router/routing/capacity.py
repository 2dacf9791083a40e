"""Measured capacity: each group's throughput, learned from the router's own traffic, in place of the
pool's declared `capacityWeight` once there are enough samples.

What is measured is the group's *token rate per request slot*: tokens the engine produced for this
router's requests divided by the seconds those requests were open on it (sent → last byte), summed
over requests and decayed with a half-life. Unlike tokens per wall-clock second it does not depend on
how much traffic the router chose to send there (an idle fast group would otherwise look slow and stay
idle), and it falls when requests queue inside the engine (they stay open without producing), so an
over-fed group measures lower and sheds load. Times the group's `maxConcurrency`, it estimates tokens
per second at a full batch: the same quantity the declared weight states by hand.

`reweigh` turns those estimates into the weights the scorers, pickers and the imbalance guard divide
load by: among one model's groups with at least `min_samples` requests measured, the weights keep the
sum of their declared weights but are shared out in proportion to the measured capacities; groups not
yet measured keep their declared weight (the prior). A measured weight moves away from the declared one
in steps of a quarter doubling (about 19%): groups of the same speed keep exactly equal weights despite
measurement noise, so ties between them still go to each prefix's stable rendezvous order instead of to
whichever group measured a hair faster. Everything here is pure: time is a parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

MIN_WEIGHT, MAX_WEIGHT = 0.001, 1000.0
STEPS_PER_DOUBLING = 4  # measured weights are the declared weight x 2^(k/4)


@dataclass(slots=True)
class Throughput:
    """Decayed sums of (tokens, request-seconds) for one endpoint; their ratio is its token rate per slot."""

    tokens: float = 0.0
    seconds: float = 0.0
    samples: int = 0  # requests observed, not decayed (the prior holds until there are enough)
    last: float | None = None  # when the last sample came (monotonic seconds)

    def add(self, tokens: float, seconds: float, now: float, half_life_s: float) -> None:
        """One finished request: `tokens` produced over `seconds` open. Bad values are ignored."""
        if not (tokens >= 0 and seconds > 0) or tokens == float("inf") or seconds == float("inf"):
            return
        if self.last is not None and half_life_s > 0 and now > self.last:
            decay = 0.5 ** ((now - self.last) / half_life_s)
            self.tokens *= decay
            self.seconds *= decay
        self.tokens += tokens
        self.seconds += seconds
        self.samples += 1
        self.last = now if self.last is None else max(self.last, now)

    @property
    def rate(self) -> float:
        """Tokens per request-second (0 before any sample)."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class Weighable(Protocol):
    """What `reweigh` reads and writes on an endpoint's state (routing.state.EndpointState is one)."""

    throughput: Throughput
    measured: float  # 0 = not measured: the declared weight is used

    @property
    def declared(self) -> float: ...  # the pool's capacityWeight (the prior)

    @property
    def slots(self) -> int: ...  # its maxConcurrency


def reweigh(states: Iterable[Weighable], min_samples: int) -> None:
    """Set `measured` on one model's endpoints (see the module doc); endpoints short of samples get 0."""
    states = list(states)
    ready = [s for s in states if s.throughput.samples >= min_samples and s.throughput.rate > 0]
    for s in states:
        s.measured = 0.0
    if not ready:
        return
    capacity = {id(s): s.throughput.rate * max(1, s.slots) for s in ready}
    scale = sum(s.declared for s in ready) / sum(capacity.values())
    for s in ready:
        steps = round(STEPS_PER_DOUBLING * math.log2(capacity[id(s)] * scale / s.declared))
        s.measured = min(MAX_WEIGHT, max(MIN_WEIGHT, s.declared * 2 ** (steps / STEPS_PER_DOUBLING)))


def work_tokens(completion: int, prompt: int, cached: int, prefill_weight: float) -> float:
    """Tokens a request cost the engine: its completion, plus its uncached prompt x `prefill_weight`."""
    return max(0, completion) + prefill_weight * max(0, prompt - cached)
