"""A routing profile: filters → weighted scorers → picker, built from RoutingConfig by the registries."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from supernode.router.config import RoutingConfig
from supernode.router.routing.cost import CostModel
from supernode.router.routing.dp_ranks import PINNABLE, pick_rank
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
    dp_rank: int | None = None  # the data-parallel rank to send it to (routing/dp_ranks.py); None: the engine picks


class Profile:
    def __init__(self, filters: list[Filter], scorers: list[tuple[Scorer, float]], picker: Picker,
                 index: PrefixIndex, sessions: SessionMap, precise: PreciseIndex | None = None,
                 guard: LoadGuard | None = None):
        self.guard = guard or LoadGuard()
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
        rank = None
        if per_rank := self._rank_matches(req, chosen):
            pinned = [chosen.rank_inflight.get(r, 0) for r in range(len(per_rank))]
            rank = pick_rank(per_rank, pinned, self.guard.abs_threshold, self.guard.rel_threshold)
            matched = per_rank[rank] if rank is not None else sum(per_rank) // len(per_rank)
        return Decision(chosen, score, matched, total, len(cands), rank)

    def _rank_matches(self, req: RoutingRequest, chosen: EndpointState) -> list[int]:
        """Leading blocks per data-parallel rank of the chosen endpoint, where the request can name a rank
        and the endpoint is precise; else [] (no rank is named)."""
        if (not req.token_block_hashes or chosen.endpoint.engine_type not in PINNABLE
                or not self.precise.is_precise(chosen.key)):
            return []
        return self.precise.rank_matches(chosen.key, req.token_block_hashes)

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
    return Profile(filters, scorers, PICKERS.build(config.picker.name, ctx), ctx.index, ctx.sessions, ctx.precise,
                   ctx.guard)
