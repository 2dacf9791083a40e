"""Routing plugins: filters, scorers, pickers, the prefix index, and the hot-prefix overload case."""

from __future__ import annotations

from collections import Counter

import pytest

from supernode.api.endpoints import Endpoint
from supernode.api.models import Mode
from supernode.router.config import RoutingConfig
from supernode.router.routing.plugins import (
    ArgmaxPicker,
    HealthyFilter,
    LoadGuard,
    LoadScorer,
    NotDrainingFilter,
    PrefixScorer,
    ServesModelModeFilter,
    overloaded,
)
from supernode.router.routing.prefix_index import PrefixIndex, SessionMap, request_hashes
from supernode.router.routing.profile import build_profile
from supernode.router.routing.state import EndpointState, EndpointTable, RoutingRequest

MODEL = "m"


class Ep:
    """Fluent builder for endpoint states."""

    def __init__(self, url: str):
        self._kw: dict[str, object] = {"url": url, "model": MODEL}
        self._state: dict[str, object] = {}

    def model(self, name: str) -> Ep:
        self._kw["model"] = name
        return self

    def modes(self, *modes: Mode) -> Ep:
        self._kw["modes"] = list(modes)
        return self

    def draining(self) -> Ep:
        self._kw["draining"] = True
        return self

    def unhealthy(self) -> Ep:
        self._state["healthy"] = False
        return self

    def inflight(self, n: int) -> Ep:
        self._state["inflight"] = n
        return self

    def state(self) -> EndpointState:
        s = EndpointState(endpoint=Endpoint(**self._kw))  # type: ignore[arg-type]
        for k, v in self._state.items():
            setattr(s, k, v)
        return s


def req(text: str = "", *, mode: Mode = Mode.THINK_HIGH, session: str | None = None, rid: str = "r") -> RoutingRequest:
    hashes = request_hashes(MODEL, text, block_size=8, max_blocks=1000) if text else ()
    return RoutingRequest(request_id=rid, model=MODEL, mode=mode, block_hashes=hashes, session=session)


def test_filters_drop_unhealthy_draining_and_wrong_model_or_mode() -> None:
    states = [Ep("a").state(), Ep("b").unhealthy().state(), Ep("c").draining().state(),
              Ep("d").model("other").state(), Ep("e").modes(Mode.NON_THINK).state()]
    r = req()
    kept = ServesModelModeFilter().filter(r, NotDrainingFilter().filter(r, HealthyFilter().filter(r, states)))
    assert [s.key for s in kept] == ["a"]


def test_prefix_index_matches_leading_blocks_only_and_is_bounded() -> None:
    idx = PrefixIndex(capacity_blocks=4)
    idx.insert("a", [1, 2, 3])
    assert idx.match("a", [1, 2, 9, 3]) == 2
    assert idx.match("a", [9, 1]) == 0
    idx.insert("a", [4, 5, 6])
    assert idx.size("a") == 4
    assert idx.match("a", [1]) == 0  # evicted (least recently used)


def test_request_hashes_share_prefix_blocks() -> None:
    a = request_hashes(MODEL, "system prompt here!" * 4 + "question one", block_size=8, max_blocks=100)
    b = request_hashes(MODEL, "system prompt here!" * 4 + "another question", block_size=8, max_blocks=100)
    common = sum(1 for x, y in zip(a, b, strict=False) if x == y)
    assert common >= 9 and a != b
    assert request_hashes("other", "system prompt here!" * 4, block_size=8, max_blocks=100)[0] != a[0]


def test_load_scorer_is_in_unit_range() -> None:
    states = [Ep("a").inflight(0).state(), Ep("b").inflight(16).state(), Ep("c").inflight(100).state()]
    scores = LoadScorer().score(req(), states)
    assert scores[0] == 1.0 and scores[1] == pytest.approx(2 / 3) and 0 < scores[2] < scores[1]


def test_prefix_scorer_zeroes_affinity_of_an_overloaded_endpoint() -> None:
    idx = PrefixIndex(1000)
    r = req("x" * 64)
    idx.insert("a", r.block_hashes)
    idx.insert("b", r.block_hashes)
    states = [Ep("a").inflight(10).state(), Ep("b").inflight(1).state(), Ep("c").inflight(0).state()]
    assert PrefixScorer(idx, LoadGuard(abs_threshold=4, rel_threshold=1.25)).score(r, states) == [0.0, 1.0, 0.0]
    assert overloaded(10, 0, 4, 1.25) and not overloaded(3, 0, 4, 1.25) and not overloaded(12, 10, 4, 1.25)


def test_argmax_tiebreak_is_deterministic_and_spreads_new_prefixes() -> None:
    states = [Ep(f"e{i}").state() for i in range(8)]
    picker = ArgmaxPicker()
    picks = {picker.pick(req(f"prefix-{i}" * 8), [(s, 1.0) for s in states]).key for i in range(40)}
    assert len(picks) >= 5
    again = picker.pick(req("prefix-3" * 8), [(s, 1.0) for s in states]).key
    assert again == picker.pick(req("prefix-3" * 8), [(s, 1.0) for s in states]).key


def test_session_affinity_sticks() -> None:
    profile = build_profile(RoutingConfig.model_validate(
        {"scorers": [{"name": "session", "weight": 1}, {"name": "load", "weight": 0.1}]}))
    states = [Ep(f"e{i}").state() for i in range(4)]
    first = profile.pick(req(session="alice"), states)
    assert first is not None
    profile.observe(req(session="alice"), first.endpoint)
    first.endpoint.inflight = 3  # a little busier, still preferred
    second = profile.pick(req(session="alice"), states)
    assert second is not None and second.endpoint.key == first.endpoint.key


def test_session_map_is_bounded() -> None:
    m = SessionMap(2)
    for k in "abc":
        m.put(k, "e")
    assert m.get("a") is None and m.get("c") == "e"


def _simulate(profile_cfg: RoutingConfig, *, steps: int = 60, hot_per_step: int = 3, cold: int = 4,
              duration: int = 8) -> tuple[Counter[str], dict[int, set[str]]]:
    """A fleet of 8 engines; each request stays in flight for ``duration`` steps. The hot tenant sends
    ``hot_per_step`` requests a step (24 in flight: far more than one engine's share), each cold
    tenant one request every 4 steps. Returns hot-prefix picks per endpoint and each cold tenant's
    endpoints."""
    profile = build_profile(profile_cfg)
    states = [Ep(f"e{i}").state() for i in range(8)]
    hot_system = "You are the hot tenant's assistant. " * 8
    hot_counts: Counter[str] = Counter()
    cold_eps: dict[int, set[str]] = {}
    running: list[tuple[int, EndpointState]] = []
    for step in range(steps):
        for done in [r for r in running if r[0] <= step]:
            done[1].inflight -= 1
            running.remove(done)
        batch: list[tuple[RoutingRequest, int | None]] = [
            (req(hot_system + f"question {step}.{k}", rid=f"h{step}.{k}"), None) for k in range(hot_per_step)]
        batch += [(req(f"Cold tenant {t} system prompt, quite long. " * 4 + f"q{step}", rid=f"c{step}.{t}"), t)
                  for t in range(cold) if step % 4 == t % 4]
        for r, tenant in batch:
            d = profile.pick(r, states)
            assert d is not None
            profile.observe(r, d.endpoint)
            d.endpoint.inflight += 1
            running.append((step + duration, d.endpoint))
            if tenant is None:
                hot_counts[d.endpoint.key] += 1
            else:
                cold_eps.setdefault(tenant, set()).add(d.endpoint.key)
    return hot_counts, cold_eps


def test_hot_prefix_spreads_over_engines_while_cold_prefixes_stay_sticky() -> None:
    """The known failure of pure prefix affinity (FACTS.md): a tenant whose traffic exceeds one engine
    must spread; with the default profile it uses most of the fleet and no engine holds far more
    than its share, while each cold tenant's few requests stay on one engine."""
    hot_counts, cold_eps = _simulate(RoutingConfig())
    total = sum(hot_counts.values())
    assert len(hot_counts) >= 3, hot_counts
    assert max(hot_counts.values()) <= 0.4 * total, hot_counts
    assert all(len(eps) == 1 for eps in cold_eps.values()), cold_eps


def test_pure_affinity_without_load_guard_keeps_hot_prefix_on_one_engine() -> None:
    """Control: with the imbalance guard disabled (huge thresholds) the hot prefix piles onto one
    engine, so the test above would fail without the guard."""
    cfg = RoutingConfig.model_validate({"imbalance": {"abs_threshold": 10_000, "rel_threshold": 100}})
    hot_counts, _ = _simulate(cfg)
    assert max(hot_counts.values()) >= 0.9 * sum(hot_counts.values())


def test_endpoint_table_keeps_state_across_updates_and_reports_removals() -> None:
    removed: list[str] = []
    table = EndpointTable(on_removed=removed.append)
    table.update([Endpoint(url="a", model=MODEL, max_concurrency=4), Endpoint(url="b", model=MODEL)])
    a = table.get("a")
    assert a is not None
    a.inflight = 2
    table.update([Endpoint(url="a", model=MODEL, draining=True, max_concurrency=4)])
    assert table.get("a") is a and a.inflight == 2 and a.endpoint.draining
    assert removed == ["b"]
    from supernode.router.admission.config import CapacityConfig
    from supernode.router.contracts import PoolKey
    from supernode.router.wiring import TableCapacity

    pool = PoolKey(MODEL, Mode.THINK_HIGH)
    assert TableCapacity(table, None).capacity(pool) == 0  # draining
    table.update([Endpoint(url="a", model=MODEL, max_concurrency=4), Endpoint(url="b", model=MODEL,
                                                                              capacity_limited=True)])
    assert TableCapacity(table, None).capacity(pool) == 36
    assert TableCapacity(table, CapacityConfig.model_validate({"capacity_limited_factor": 0.5})).capacity(pool) == 18
    assert TableCapacity(table, None).capacity(PoolKey("other", Mode.THINK_HIGH)) == 0


def test_saturated_affine_endpoint_yields_while_another_has_a_free_slot() -> None:
    idx = PrefixIndex(1000)
    r = req("y" * 64)
    idx.insert("a", r.block_hashes)
    states = [Ep("a").inflight(2).state(), Ep("b").inflight(1).state()]
    for s in states:
        s.endpoint.max_concurrency = 2
    assert PrefixScorer(idx, LoadGuard()).score(r, states) == [0.0, 0.0]
    states[1].inflight = 2  # nobody has a free slot: affinity stands (waiting beats a cache miss)
    assert PrefixScorer(idx, LoadGuard()).score(r, states) == [1.0, 0.0]
    assert PrefixScorer(idx, LoadGuard(saturation=False)).score(r, [states[0], Ep("c").state()]) == [1.0, 0.0]


def test_load_is_own_in_flight_plus_others_from_the_last_scrape() -> None:
    from supernode.router.routing.state import EngineStats

    s = Ep("a").inflight(3).state()
    s.apply_scrape(EngineStats(running=4, waiting=1))  # 2 of the engine's 5 came from elsewhere
    assert s.load == 5
    s.inflight = 0  # ours finished since: no phantom load from a stale scrape
    assert s.load == 2


def test_power_of_two_picks_the_less_loaded_of_two_among_the_top() -> None:
    import random

    from supernode.router.routing.plugins import KvCacheScorer, PowerOfTwoPicker

    states = [Ep("a").inflight(5).state(), Ep("b").inflight(1).state(), Ep("c").inflight(0).state()]
    picker = PowerOfTwoPicker(top_k=2, rng=random.Random(0))
    scored = [(states[0], 0.9), (states[1], 0.8), (states[2], 0.1)]  # c is outside the top 2
    assert {picker.pick(req(), scored).key for _ in range(20)} == {"b"}
    states[0].stats.kv_usage = 0.75
    assert KvCacheScorer().score(req(), states[:1]) == [0.25]


def test_profile_from_config_builds_every_plugin() -> None:
    cfg = RoutingConfig.model_validate({
        "scorers": [{"name": n, "weight": 1} for n in ("prefix", "load", "session", "kv-cache")],
        "picker": {"name": "power-of-two", "top_k": 3}})
    profile = build_profile(cfg, seed=1)
    assert [s.name for s, _ in profile.scorers] == ["prefix", "load", "session", "kv-cache"]
    assert profile.picker.name == "power-of-two"
    d = profile.pick(req("z" * 80), [Ep("a").state(), Ep("b").draining().state()])
    assert d is not None and d.endpoint.key == "a" and d.candidates == 1


def test_headroom_scorer_is_flat_below_capacity_and_ordered_beyond() -> None:
    from supernode.router.routing.plugins import HeadroomScorer

    states = [Ep(f"e{i}").inflight(n).state() for i, n in enumerate((0, 31, 32, 64))]
    assert HeadroomScorer().score(req(), states) == [1.0, 1.0, 0.5, 0.25]


def test_saturation_slack_lets_one_request_wait_for_a_cached_prefix() -> None:
    states = [Ep("a").inflight(32).state(), Ep("b").inflight(33).state(), Ep("c").inflight(0).state()]
    assert LoadGuard(abs_threshold=100, saturation_slack=1).yielding(states) == [False, True, False]
    assert LoadGuard(abs_threshold=100, saturation_slack=2).yielding(states) == [False, False, False]
    assert LoadGuard(abs_threshold=100, saturation_slack=0).yielding(states) == [True, True, False]


def test_hot_prefix_overflows_onto_a_stable_replica_set_and_packs_its_home() -> None:
    """Replica set: a prefix fills its home endpoint, then the next in its rendezvous order; sessions of
    the same prefix share that order, so the set is the same whoever asks, and it grows one endpoint
    at a time with load instead of scattering over the fleet."""
    profile = build_profile(RoutingConfig())
    states = [Ep(f"e{i}").state() for i in range(8)]
    for s in states:
        s.endpoint.max_concurrency = 2
    system = "You are the hot tenant's assistant; answer briefly. " * 4
    order: list[str] = []
    for k in range(8):  # eight in flight at once; each endpoint takes 2 running + 2 waiting (the slack)
        r = req(system + f"q{k}", session=f"s{k}", rid=f"r{k}")
        d = profile.pick(r, states)
        assert d is not None
        profile.observe(r, d.endpoint)
        d.endpoint.inflight += 1
        order.append(d.endpoint.key)
    used = list(dict.fromkeys(order))
    assert order == [used[0]] * 4 + [used[1]] * 4, order  # fill the home, then exactly one more endpoint
    # the same prefix from a fresh router picks the same home: the order depends on the prefix only
    fresh = build_profile(RoutingConfig())
    d = fresh.pick(req(system + "other", session="zz"), [Ep(f"e{i}").state() for i in range(8)])
    assert d is not None and d.endpoint.key == used[0]
