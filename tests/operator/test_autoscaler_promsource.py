"""The autoscaler's Prometheus source (pure): the queries it asks, and Prometheus answers turned into the
router-answer shape the sample is built from; anything malformed or empty is missing data."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supernode.operator import demand as D
from supernode.operator import promsource as P


def vector(*series: tuple[str, str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"model": m, "mode": mode}, "value": [1700000000.0, str(v)]} for m, mode, v in series]}}


def replies(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "queued": vector(("m", "non-think", 3), ("m", "think-high", 2), ("other", "non-think", 50)),
        "queuedTokens": vector(("m", "non-think", 300), ("m", "think-high", 200)),
        "oldestWaitSeconds": vector(("m", "non-think", 1.5), ("m", "think-high", 4.0)),
        "inFlight": vector(("m", "non-think", 7)),
        "spilledTotal": vector(("m", "non-think", 10)),
        "noCapacityTotal": vector(("m", "non-think", 4)),
    }
    return {**base, **overrides}


def test_queries_combine_router_replicas_by_model_and_mode() -> None:
    assert P.promql("queued") == "sum by (model, mode) (supernode_router_pool_queued_requests)"
    assert P.promql("oldestWaitSeconds") == "max by (model, mode) (supernode_router_pool_oldest_wait_seconds)"
    assert P.promql("noCapacityTotal", 'namespace="sn"') == \
        'sum by (model, mode) (supernode_router_pool_no_capacity_total{namespace="sn"})'
    url, params = P.query_url("http://prom:9090/", "inFlight")
    assert url == "http://prom:9090/api/v1/query"
    assert params["query"].endswith("(supernode_router_pool_inflight_requests)")


def test_the_queried_series_are_the_ones_the_router_exports() -> None:
    from supernode.router.demand import DemandCollector

    class Gate:
        def pools(self) -> list[dict[str, Any]]:
            return [{"model": "m", "mode": "non-think", "queued": 1, "queuedTokens": 2, "oldestWaitSeconds": 3.0,
                     "inFlight": 4, "admittedTotal": 5, "spilledTotal": 6, "noCapacityTotal": 7}]

    registry = CollectorRegistry()
    registry.register(DemandCollector(Gate()))  # type: ignore[arg-type]
    exposed = {s.name: s.labels for f in text_string_to_metric_families(generate_latest(registry).decode())
               for s in f.samples}
    for field, (_, series) in P.QUERIES.items():
        assert exposed.get(series) == {"model": "m", "mode": "non-think"}, (field, series, sorted(exposed))


def test_answers_become_one_router_answer_and_the_same_sample() -> None:
    answers = P.answers_from(replies())
    pools = {(p["model"], p["mode"]): p for p in answers[P.SOURCE]["pools"]}
    assert pools[("m", "think-high")] == {"model": "m", "mode": "think-high", "queued": 2.0, "queuedTokens": 200.0,
                                          "oldestWaitSeconds": 4.0, "inFlight": 0.0, "spilledTotal": 0.0,
                                          "noCapacityTotal": 0.0}
    totals = D.Totals()
    first = D.sample_for({"m"}, answers, 100.0, totals)
    assert (first.queued, first.queued_tokens, first.in_flight, first.queue_wait) == (5.0, 500.0, 7.0, 4.0)
    assert first.kv_usage is None, "Prometheus has no KV usage: that target is not evaluated"
    later = P.answers_from(replies(noCapacityTotal=vector(("m", "non-think", 6)),
                                   spilledTotal=vector(("m", "non-think", 40))))
    second = D.sample_for({"m"}, later, 110.0, totals)
    assert second.queued == 5.0 + 2.0, "refusals since the last poll count as queued demand"
    assert second.spill_rate == pytest.approx(3.0)
    assert D.idle_draining("llm/m", answers) == set(), "no draining groups from Prometheus"


@pytest.mark.parametrize("bad", [
    pytest.param({"status": "error", "errorType": "bad_data", "error": "parse error"}, id="error status"),
    pytest.param({"status": "success", "data": {"resultType": "matrix", "result": []}}, id="range vector"),
    pytest.param({"status": "success", "data": {"resultType": "vector"}}, id="no result"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"mode": "x"},
                                                                                    "value": [0, "1"]}]}},
                 id="no model label"),
    pytest.param(vector(("m", "non-think", "abc")), id="not a number"),
    pytest.param(vector(("m", "non-think", "NaN")), id="NaN"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"model": "m"}}]}},
                 id="no value"),
    pytest.param(["not", "an", "object"], id="not an object"),
])
def test_a_malformed_answer_is_missing_data(bad: Any) -> None:
    with pytest.raises(P.PrometheusAnswerError):
        P.answers_from(replies(queued=bad))


def test_no_series_at_all_or_a_missing_answer_is_missing_data() -> None:
    with pytest.raises(P.PrometheusAnswerError, match="scraping"):
        P.answers_from({field: vector() for field in P.QUERIES})
    partial = replies()
    del partial["inFlight"]
    with pytest.raises(P.PrometheusAnswerError, match="inFlight"):
        P.answers_from(partial)
    only_some = {field: vector() for field in P.QUERIES} | {"inFlight": vector(("m", "non-think", 0))}
    assert P.answers_from(only_some)[P.SOURCE]["pools"][0]["queued"] == 0.0, "absent series of a known pool: 0"


async def test_an_unreachable_prometheus_is_a_poll_error() -> None:
    import socket

    from supernode.operator.scaler import Autoscaler, AutoscalerConfig

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scaler = Autoscaler(client=None, config=AutoscalerConfig(  # type: ignore[arg-type]
        prometheus_url=f"http://127.0.0.1:{port}", timeout_seconds=1.0))
    try:
        answers, error = await scaler.poll(0.0)
    finally:
        await scaler.close()
    assert answers == {} and error.startswith(f"prometheus http://127.0.0.1:{port}: ClientConnectorError"), error
