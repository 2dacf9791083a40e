"""A routing profile: filters → weighted scorers → picker, built from RoutingConfig by the registries."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from supernode.router.config import RoutingConfig
from supernode.router.routing.cost import CostModel
from supernode.router.routing.plugins import Filter, LoadGuard, Picker, Scorer, cached_blocks
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.prefix_index import PrefixIndex, SessionMap
from supernode.router.routing.registry import FILTERS, PICKERS, SCORERS, BuildContext
from supernode.router.routing.state import EndpointState, RoutingRequest


@dataclass(frozen=True, slots=True)
class Decision:
    endpoint: EndpointState
    score: float
    prefix_blocks: int  # leading blocks the chosen endpoint holds (reported) or is believed to hold
    total_blocks: int
    candidates: int


class Profile:
    def __init__(self, filters: list[Filter], scorers: list[tuple[Scorer, float]], picker: Picker,
                 index: PrefixIndex, sessions: SessionMap, precise: PreciseIndex | None = None):
        self.filters = filters
        self.scorers = scorers
        self.picker = picker
        self.index = index
        self.sessions = sessions
        self.precise = precise or PreciseIndex()

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
        matched, total = cached_blocks(req, chosen.key, self.index, self.precise)
        return Decision(chosen, score, matched, total, len(cands))

    def observe(self, req: RoutingRequest, endpoint: EndpointState) -> None:
        """Once the endpoint answered (first byte): it now holds this prompt's blocks and this session.
        (The approximate index's guess; endpoints with KV events report their blocks themselves.)"""
        if req.block_hashes:
            self.index.insert(endpoint.key, req.block_hashes)
        if req.session:
            self.sessions.put(req.session, endpoint.key)

    def forget(self, endpoint_key: str) -> None:
        self.index.drop(endpoint_key)
        self.precise.drop(endpoint_key)
        self.sessions.drop_endpoint(endpoint_key)


def build_profile(config: RoutingConfig, *, seed: int | None = None) -> Profile:
    """Filters, weighted scorers and the picker, each built by its kind's registry (unknown names raise)."""
    im = config.imbalance
    ctx = BuildContext(index=PrefixIndex(config.prefix.capacity_blocks),
                       precise=PreciseIndex(config.prefix.precise_max_blocks),
                       sessions=SessionMap(config.session_capacity),
                       guard=LoadGuard(im.abs_threshold, im.rel_threshold, im.saturation_guard, im.saturation_slack),
                       rng=random.Random(seed), top_k=config.picker.top_k,
                       cost=CostModel(config.cost.request_tokens, config.cost.busy_tokens))
    filters = [FILTERS.build(name, ctx) for name in config.filters]
    scorers = [(SCORERS.build(sc.name, ctx), sc.weight) for sc in config.scorers]
    return Profile(filters, scorers, PICKERS.build(config.picker.name, ctx), ctx.index, ctx.sessions, ctx.precise)
