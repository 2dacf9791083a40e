"""The cost scorer: predicted prefill + queue cost as a pure function, table-tested, and the scorer on
endpoint states (longest cached prefix in tokens, the load guard kept, ties to the less loaded)."""

from __future__ import annotations

import pytest

from supernode.api.endpoints import Endpoint
from supernode.api.models import Mode
from supernode.router.config import RoutingConfig
from supernode.router.routing.cost import CostModel, cost_scores, uncached_tokens
from supernode.router.routing.plugins import CostScorer, LoadGuard
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.prefix_index import PrefixIndex
from supernode.router.routing.profile import build_profile
from supernode.router.routing.state import EndpointState, RoutingRequest

M = CostModel(request_tokens=1000, busy_tokens=10)


@pytest.mark.parametrize(("case", "uncached", "load", "slots", "expected"), [
    ("an idle endpoint costs its uncached prefill only", 300, 0, 2, 300),
    ("a running request adds the busy charge per slot", 300, 1, 2, 300 + 10 * 1 / 2),
    ("no free slot: one request ahead to finish, shared by the slots", 0, 2, 2, 1000 * 1 / 2 + 10 * 2 / 2),
    ("two queued ahead wait twice as long", 0, 3, 2, 1000 * 2 / 2 + 10 * 3 / 2),
    ("a fully cached prompt on a free slot costs nothing but load", 0, 0, 4, 0),
    ("a larger group (more slots) waits less for the same queue", 0, 8, 8, 1000 * 1 / 8 + 10 * 8 / 8),
    ("negative uncached counts as none", -5, 0, 1, 0),
])
def test_cost_table(case: str, uncached: float, load: float, slots: float, expected: float) -> None:
    assert M.cost(uncached_tokens=uncached, load=load, slots=slots) == pytest.approx(expected), case


@pytest.mark.parametrize(("case", "prompt", "hit", "total", "expected"), [
    ("nothing cached: the whole prompt", 1000, 0, 10, 1000),
    ("half the blocks cached: half the tokens", 1000, 5, 10, 500),
    ("all cached", 1000, 10, 10, 0),
    ("no blocks hashed (short prompt): the whole prompt", 30, 0, 0, 30),
    ("a match longer than the prompt's blocks is capped", 100, 12, 10, 0),
])
def test_uncached_tokens_table(case: str, prompt: int, hit: int, total: int, expected: float) -> None:
    assert uncached_tokens(prompt, hit, total) == pytest.approx(expected), case


def test_scores_are_a_cost_ratio_with_one_for_the_cheapest() -> None:
    assert cost_scores([]) == []
    assert cost_scores([0.0, 1.0, 3.0]) == [1.0, 0.5, 0.25]
    assert cost_scores([99.0, 99.0]) == [1.0, 1.0]


def test_model_refuses_negative_parameters() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        CostModel(request_tokens=-1)


# --- the scorer on endpoint states ------------------------------------------------------------------
HASHES = tuple(range(1, 11))  # a prompt of 10 blocks


def state(url: str, load: int, slots: int = 2) -> EndpointState:
    s = EndpointState(endpoint=Endpoint(url=url, model="m", max_concurrency=slots))
    s.inflight = load
    return s


def scorer(held: dict[str, int], *, guard: LoadGuard | None = None) -> CostScorer:
    """A cost scorer whose precise index says each endpoint holds the first `held[url]` blocks."""
    precise = PreciseIndex()
    for url, n in held.items():
        precise.set_precise(url, True)
        precise.store(url, ((h, h) for h in HASHES[:n]))
    return CostScorer(PrefixIndex(100), guard or LoadGuard(abs_threshold=100, saturation_slack=2), M, precise)


def rreq(prompt_tokens: int = 1000) -> RoutingRequest:
    return RoutingRequest("r", "m", Mode.NON_THINK, block_hashes=HASHES, token_block_hashes=HASHES,
                          prompt_tokens=prompt_tokens)


@pytest.mark.parametrize(("case", "held", "loads", "cheapest"), [
    ("the longest cached prefix wins among free endpoints", {"a": 2, "b": 8, "c": 0}, (0, 0, 0), "b"),
    ("a cache hit does not buy a queue longer than the prefill it saves", {"a": 8, "b": 0}, (3, 0), "b"),
    ("a short wait is worth a long cached prefix", {"a": 10, "b": 0}, (2, 0), "a"),
    ("equal caches: the less loaded", {"a": 5, "b": 5}, (1, 0), "b"),
])
def test_scorer_picks_the_cheapest(case: str, held: dict[str, int], loads: tuple[int, ...], cheapest: str) -> None:
    states = [state(url, load) for url, load in zip(held, loads, strict=True)]
    scores = scorer(held).score(rreq(), states)
    assert states[scores.index(max(scores))].key == cheapest, (case, scores)


def test_load_guard_still_zeroes_affinity_of_a_saturated_endpoint() -> None:
    """Even with a request cost that would make the wait look cheap, a saturated endpoint is costed as
    holding nothing while another has a free slot (the guard, SGLang's rule, is kept)."""
    cheap_wait = CostScorer(PrefixIndex(100), LoadGuard(abs_threshold=100), CostModel(request_tokens=1, busy_tokens=0),
                            scorer({"a": 10, "b": 0}).precise)
    states = [state("a", 2), state("b", 0)]
    assert cheap_wait.costs(rreq(), states)[0] == pytest.approx(1000 + 1 * 1 / 2)  # full prefill + a tiny wait
    no_guard = CostScorer(PrefixIndex(100), LoadGuard(abs_threshold=100, saturation=False),
                          CostModel(request_tokens=1, busy_tokens=0), scorer({"a": 10, "b": 0}).precise)
    assert no_guard.costs(rreq(), states)[0] == pytest.approx(0.5)  # control: without the guard, the hit counts


def test_cost_profile_from_config() -> None:
    cfg = RoutingConfig.model_validate({"scorers": [{"name": "cost"}],
                                        "cost": {"request_tokens": 500, "busy_tokens": 4}})
    profile = build_profile(cfg)
    (sc, _), = profile.scorers
    assert isinstance(sc, CostScorer) and sc.model == CostModel(500, 4)
    with pytest.raises(ValueError, match="request_tokens"):
        RoutingConfig.model_validate({"cost": {"request_tokens": -1}})
