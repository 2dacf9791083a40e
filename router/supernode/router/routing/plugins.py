"""Filters, scorers (scores in [0, 1]) and pickers, each behind a Protocol."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from supernode.router.routing.cost import TOKENS_PER_BLOCK_GUESS, CostModel, cost_scores, uncached_tokens
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.prefix_index import PrefixIndex, SessionMap
from supernode.router.routing.state import EndpointState, RoutingRequest


class Filter(Protocol):
    name: str

    def filter(self, req: RoutingRequest, candidates: list[EndpointState]) -> list[EndpointState]: ...


class Scorer(Protocol):
    name: str

    def score(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]: ...


class Picker(Protocol):
    name: str

    def pick(self, req: RoutingRequest, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState: ...


# --- filters ---------------------------------------------------------------------------------------
class HealthyFilter:
    name = "healthy"

    def filter(self, req: RoutingRequest, candidates: list[EndpointState]) -> list[EndpointState]:
        return [s for s in candidates if s.healthy and s.endpoint.ready]


class NotDrainingFilter:
    name = "not-draining"

    def filter(self, req: RoutingRequest, candidates: list[EndpointState]) -> list[EndpointState]:
        return [s for s in candidates if not s.endpoint.draining]


class ServesModelModeFilter:
    name = "serves-model-mode"

    def filter(self, req: RoutingRequest, candidates: list[EndpointState]) -> list[EndpointState]:
        return [s for s in candidates if s.endpoint.model == req.model and req.mode in s.endpoint.modes]


# --- scorers ---------------------------------------------------------------------------------------
def relative_load(s: EndpointState) -> float:
    """Load per unit of capacity (measured, else the pool's declared weight): what equal shares are judged by."""
    return s.load / s.capacity


def overloaded(load: float, min_load: float, abs_threshold: float, rel_threshold: float) -> bool:
    """SGLang's imbalance rule, applied to one endpoint against the least loaded candidate."""
    return load - min_load > abs_threshold and load > rel_threshold * min_load


@dataclass(frozen=True, slots=True)
class LoadGuard:
    """When affinity (prefix or session) must yield to load: on an endpoint overloaded relative to the
    least loaded candidate (SGLang's rule), or saturated (load >= its max concurrency) while another
    candidate still has a free slot."""

    abs_threshold: float = 8.0
    rel_threshold: float = 1.25
    saturation: bool = True
    saturation_slack: float = 0.0  # requests that may wait on a saturated affine endpoint before it yields

    def yielding(self, candidates: Sequence[EndpointState]) -> list[bool]:
        if not candidates:
            return []
        # Imbalance is judged per unit of capacity: a group with twice the weight may carry twice the load.
        min_load = min(relative_load(s) for s in candidates)
        free_slot = self.saturation and any(s.load < s.endpoint.max_concurrency for s in candidates)
        return [(free_slot and s.load >= s.endpoint.max_concurrency + self.saturation_slack)
                or overloaded(relative_load(s), min_load, self.abs_threshold, self.rel_threshold)
                for s in candidates]


def cached_blocks(req: RoutingRequest, endpoint: str, approx: PrefixIndex, precise: PreciseIndex) -> tuple[int, int]:
    """(leading blocks the endpoint holds, blocks in the prompt): from the engine's own KV events when the
    endpoint is precise and the router tokenized the prompt, else from the approximate index."""
    if req.token_block_hashes and precise.is_precise(endpoint):
        return precise.match(endpoint, req.token_block_hashes), len(req.token_block_hashes)
    return approx.match(endpoint, req.block_hashes), len(req.block_hashes)


class PrefixScorer:
    """Share of the prompt's leading blocks an endpoint holds (in tokens, for endpoints whose engines
    publish KV events), zeroed where the load guard says affinity yields. A hot prefix thus overflows
    to the least loaded endpoint, which then holds it too: the prefix spreads over as many endpoints as
    its load needs, while a cold prefix, whose endpoint is neither overloaded nor saturated, stays put."""

    name = "prefix"

    def __init__(self, index: PrefixIndex, guard: LoadGuard, precise: PreciseIndex | None = None):
        self.index = index
        self.guard = guard
        self.precise = precise or PreciseIndex()

    def ratios(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]:
        out = []
        for s in candidates:
            hit, total = cached_blocks(req, s.key, self.index, self.precise)
            out.append(hit / total if total else 0.0)
        return out

    def score(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]:
        ratios = self.ratios(req, candidates)
        return [0.0 if y else r for r, y in zip(ratios, self.guard.yielding(candidates), strict=True)]


class CostScorer:
    """The predicted cost of the request on each endpoint (routing/cost.py: the prefill of the tokens past
    its longest cached prefix, plus the wait for a slot and a charge per running request), as a score:
    1 for the cheapest. The load guard still applies: where affinity yields (overloaded or saturated
    endpoint), the endpoint is costed as holding nothing. Equal costs go to the picker's tie-break (less
    loaded, then the prefix's rendezvous order)."""

    name = "cost"

    def __init__(self, index: PrefixIndex, guard: LoadGuard, model: CostModel, precise: PreciseIndex | None = None):
        self.index = index
        self.guard = guard
        self.model = model
        self.precise = precise or PreciseIndex()

    def costs(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]:
        prompt = req.prompt_tokens or len(req.block_hashes) * TOKENS_PER_BLOCK_GUESS
        out = []
        for s, yields in zip(candidates, self.guard.yielding(candidates), strict=True):
            hit, total = (0, 0) if yields else cached_blocks(req, s.key, self.index, self.precise)
            slots = max(1, s.endpoint.max_concurrency) * s.capacity  # measured, else declared weight
            out.append(self.model.cost(uncached_tokens=uncached_tokens(prompt, hit, total), load=s.load, slots=slots))
        return out

    def score(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]:
        return cost_scores(self.costs(req, candidates))


class LoadScorer:
    """1 / (1 + load / (max concurrency x capacity weight)): 1 when idle, 0.5 at its concurrency, still
    ordered beyond it (load = running + waiting, or the router's in-flight count if larger). Groups with
    twice the weight (measured, else declared) reach the same score at twice the load, so they hold twice
    the requests."""

    name = "load"

    def score(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]:
        return [1.0 / (1.0 + s.load / (max(1, s.endpoint.max_concurrency) * s.capacity))
                for s in candidates]


class HeadroomScorer:
    """1 while the endpoint has a free slot (load < max concurrency), then 0.5 x max concurrency / load.
    Unlike `load`, it does not tell busy-but-unsaturated endpoints apart, so prefix, session and the
    prefix's stable tie-break decide there: a prefix packs onto its home endpoints and spills to the
    next one in its rendezvous order only when they are full (its replica set grows and shrinks with
    its load) instead of drifting to whichever endpoint is momentarily idlest."""

    name = "headroom"

    def score(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]:
        out = []
        for s in candidates:
            cap = max(1, s.endpoint.max_concurrency)
            out.append(1.0 if s.load < cap else 0.5 * cap / s.load)
        return out


class KvCacheScorer:
    name = "kv-cache"

    def score(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]:
        return [min(1.0, max(0.0, 1.0 - s.stats.kv_usage)) for s in candidates]


class SessionScorer:
    """1 for the endpoint that served this session last, unless the load guard says it must yield."""

    name = "session"

    def __init__(self, sessions: SessionMap, guard: LoadGuard):
        self.sessions = sessions
        self.guard = guard

    def score(self, req: RoutingRequest, candidates: Sequence[EndpointState]) -> list[float]:
        target = self.sessions.get(req.session) if req.session else None
        if target is None:
            return [0.0] * len(candidates)
        return [1.0 if s.key == target and not y else 0.0
                for s, y in zip(candidates, self.guard.yielding(candidates), strict=True)]


# --- pickers ---------------------------------------------------------------------------------------
def _tiebreak(seed: str, key: str) -> int:
    """Rendezvous hash: equal scores go to a stable, seed-dependent endpoint (new prefixes spread)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}|{key}".encode(), digest_size=8).digest(), "little")


class ArgmaxPicker:
    name = "argmax"

    def pick(self, req: RoutingRequest, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState:
        seed = req.routing_key
        return max(scored, key=lambda p: (round(p[1], 9), -relative_load(p[0]), _tiebreak(seed, p[0].key)))[0]


class PowerOfTwoPicker:
    """Two random endpoints among the top k by score; the less loaded one wins."""

    name = "power-of-two"

    def __init__(self, top_k: int = 2, rng: random.Random | None = None):
        self.top_k = top_k
        self.rng = rng or random.Random()

    def pick(self, req: RoutingRequest, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState:
        top = sorted(scored, key=lambda p: -p[1])[: self.top_k]
        if len(top) == 1:
            return top[0][0]
        a, b = self.rng.sample(top, 2)
        return min((a, b), key=lambda p: (relative_load(p[0]), -p[1]))[0]
