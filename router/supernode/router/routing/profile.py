"""A routing profile: filters → weighted scorers → picker, built from RoutingConfig by a registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from supernode.router.config import RoutingConfig
from supernode.router.routing.plugins import (
    ArgmaxPicker,
    Filter,
    HeadroomScorer,
    HealthyFilter,
    KvCacheScorer,
    LoadGuard,
    LoadScorer,
    NotDrainingFilter,
    Picker,
    PowerOfTwoPicker,
    PrefixScorer,
    Scorer,
    ServesModelModeFilter,
    SessionScorer,
)
from supernode.router.routing.prefix_index import PrefixIndex, SessionMap
from supernode.router.routing.state import EndpointState, RoutingRequest

FILTERS: dict[str, Callable[[], Filter]] = {
    "healthy": HealthyFilter,
    "not-draining": NotDrainingFilter,
    "serves-model-mode": ServesModelModeFilter,
}


@dataclass(frozen=True, slots=True)
class Decision:
    endpoint: EndpointState
    score: float
    prefix_blocks: int  # leading blocks the chosen endpoint is believed to hold
    total_blocks: int
    candidates: int


class Profile:
    def __init__(self, filters: list[Filter], scorers: list[tuple[Scorer, float]], picker: Picker,
                 index: PrefixIndex, sessions: SessionMap):
        self.filters = filters
        self.scorers = scorers
        self.picker = picker
        self.index = index
        self.sessions = sessions

    def candidates(self, req: RoutingRequest, endpoints: Iterable[EndpointState],
                   exclude: frozenset[str] = frozenset()) -> list[EndpointState]:
        cands = [s for s in endpoints if s.key not in exclude]
        for f in self.filters:
            cands = f.filter(req, cands)
        return cands

    def pick(self, req: RoutingRequest, endpoints: Iterable[EndpointState],
             exclude: frozenset[str] = frozenset()) -> Decision | None:
        cands = self.candidates(req, endpoints, exclude)
        if not cands:
            return None
        totals = [0.0] * len(cands)
        for scorer, weight in self.scorers:
            for i, value in enumerate(scorer.score(req, cands)):
                totals[i] += weight * value
        chosen = self.picker.pick(req, list(zip(cands, totals, strict=True)))
        score = totals[cands.index(chosen)]
        matched = self.index.match(chosen.key, req.block_hashes)
        return Decision(chosen, score, matched, len(req.block_hashes), len(cands))

    def observe(self, req: RoutingRequest, endpoint: EndpointState) -> None:
        """After the pick: the endpoint will now hold this prompt's blocks and this session."""
        if req.block_hashes:
            self.index.insert(endpoint.key, req.block_hashes)
        if req.session:
            self.sessions.put(req.session, endpoint.key)

    def forget(self, endpoint_key: str) -> None:
        self.index.drop(endpoint_key)
        self.sessions.drop_endpoint(endpoint_key)


def build_profile(config: RoutingConfig, *, seed: int | None = None) -> Profile:
    import random

    index = PrefixIndex(config.prefix.capacity_blocks)
    sessions = SessionMap(config.session_capacity)
    filters = [FILTERS[name]() for name in config.filters]
    scorers: list[tuple[Scorer, float]] = []
    im = config.imbalance
    guard = LoadGuard(im.abs_threshold, im.rel_threshold, im.saturation_guard, im.saturation_slack)
    for sc in config.scorers:
        scorer: Scorer
        if sc.name == "prefix":
            scorer = PrefixScorer(index, guard)
        elif sc.name == "load":
            scorer = LoadScorer()
        elif sc.name == "headroom":
            scorer = HeadroomScorer()
        elif sc.name == "session":
            scorer = SessionScorer(sessions, guard)
        else:
            scorer = KvCacheScorer()
        scorers.append((scorer, sc.weight))
    picker: Picker = (ArgmaxPicker() if config.picker.name == "argmax"
                      else PowerOfTwoPicker(config.picker.top_k, random.Random(seed)))
    return Profile(filters, scorers, picker, index, sessions)
