"""Mixed pools in the router: load spreads by each group's capacity weight, prefixes stay where they are
held, and the weight reaches the router from the operator's leader annotations."""

from __future__ import annotations

from collections import Counter

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.api.models import Mode
from supernode.router.config import RoutingConfig
from supernode.router.discovery.kubernetes import endpoint_from_pod
from supernode.router.routing.prefix_index import request_hashes
from supernode.router.routing.profile import build_profile
from supernode.router.routing.state import EndpointState, RoutingRequest

MODEL = "m"


def state(url: str, weight: float, pool: str, concurrency: int = 64) -> EndpointState:
    return EndpointState(endpoint=Endpoint(url=url, model=MODEL, pool=pool, capacity_weight=weight,
                                           max_concurrency=concurrency))


def request(text: str, rid: str) -> RoutingRequest:
    return RoutingRequest(request_id=rid, model=MODEL, mode=Mode.THINK_HIGH,
                          block_hashes=request_hashes(MODEL, text, block_size=8, max_blocks=1000))


def spread(profile_cfg: RoutingConfig, n: int = 60) -> Counter[str]:
    """`n` requests with distinct prompts, none finishing: how many each group holds at the end."""
    profile = build_profile(profile_cfg, seed=1)
    fleet = [state("big", 2.0, "h200"), state("small-a", 1.0, "ascend"), state("small-b", 1.0, "ascend")]
    for i in range(n):
        d = profile.pick(request(f"prompt number {i} " * 6, f"r{i}"), fleet)
        assert d is not None
        profile.observe(request(f"prompt number {i} " * 6, f"r{i}"), d.endpoint)
        d.endpoint.inflight += 1
    return Counter({s.endpoint.url: s.inflight for s in fleet})


def test_a_group_with_twice_the_weight_gets_twice_the_requests() -> None:
    for cfg in (RoutingConfig(), RoutingConfig.model_validate(
            {"scorers": [{"name": "prefix", "weight": 2}, {"name": "load", "weight": 1}]})):
        held = spread(cfg)
        assert held["big"] == 30 and held["small-a"] == held["small-b"] == 15, held


def test_equal_weights_still_spread_evenly() -> None:
    profile = build_profile(RoutingConfig(), seed=1)
    fleet = [state("a", 1.0, "x"), state("b", 1.0, "y")]
    for i in range(20):
        d = profile.pick(request(f"p{i} " * 10, f"r{i}"), fleet)
        assert d is not None
        d.endpoint.inflight += 1
    assert [s.inflight for s in fleet] == [10, 10]


def test_a_prefix_stays_on_the_small_group_that_holds_it() -> None:
    profile = build_profile(RoutingConfig(), seed=1)
    big, small = state("big", 4.0, "h200"), state("small", 1.0, "ascend")
    system = "You are the tenant's assistant with a long system prompt. " * 4
    first = request(system + "q0", "r0")
    profile.observe(first, small)  # the small group served this prefix first and holds it
    small.inflight = 2
    for i in range(1, 4):  # the big group is idle, but not so much that affinity must yield
        d = profile.pick(request(system + f"q{i}", f"r{i}"), [big, small])
        assert d is not None and d.endpoint.key == small.key


def test_kubernetes_discovery_reads_the_pool_weight_and_concurrency_from_the_leader() -> None:
    pod = {"metadata": {"name": "v4-h200-g0-abc-0", "namespace": "llm",
                        "labels": {C.LABEL_ROLE: C.ROLE_LEADER, C.LABEL_MODEL: MODEL, C.LABEL_DEPLOYMENT: "v4",
                                   C.LABEL_GROUP: "0", C.LABEL_POOL: "h200"},
                        "annotations": {C.ANNOTATION_CAPACITY_WEIGHT: "1.5", C.ANNOTATION_MAX_CONCURRENCY: "96"}},
           "status": {"podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": "True"}]}}
    ep = endpoint_from_pod(pod, None)
    assert ep is not None and (ep.pool, ep.capacity_weight, ep.max_concurrency) == ("h200", 1.5, 96)
    pod["metadata"]["annotations"] = {C.ANNOTATION_CAPACITY_WEIGHT: "-3", C.ANNOTATION_MAX_CONCURRENCY: "x"}
    ep = endpoint_from_pod(pod, None)
    assert ep is not None and (ep.capacity_weight, ep.max_concurrency) == (1.0, 32)  # bad values: defaults


def test_only_the_short_pool_counts_as_capacity_limited() -> None:
    md = {"status": {"conditions": [{"type": C.COND_CAPACITY_LIMITED, "status": "True"}],
                     "pools": [{"name": "ascend", "capacityLimited": False},
                               {"name": "h200", "capacityLimited": True}]}}

    def leader(pool: str) -> dict[str, object]:
        return {"metadata": {"name": f"v4-{pool}-g0-abc-0", "namespace": "llm",
                             "labels": {C.LABEL_ROLE: C.ROLE_LEADER, C.LABEL_MODEL: MODEL, C.LABEL_POOL: pool}},
                "status": {"podIP": "10.1.0.5"}}

    ascend, h200 = endpoint_from_pod(leader("ascend"), md), endpoint_from_pod(leader("h200"), md)
    assert ascend is not None and not ascend.capacity_limited
    assert h200 is not None and h200.capacity_limited
