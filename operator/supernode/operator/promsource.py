"""The autoscaler's optional Prometheus signal source (pure): the PromQL it asks and the translation of
the answers into the same per-router shape `GET /autoscaling/signals` has.

Instead of reading every router replica, the autoscaler asks a Prometheus that scrapes the routers'
`supernode_router_pool_*` series (by `model` and `mode`) for instant vectors already combined over the
replicas: sums for the counts and counters, the maximum for the oldest wait. The answers become one
synthetic router body (`pools` only), so `demand.sample_for` turns them into samples exactly as it does
the routers' JSON. Prometheus has no KV-cache usage and no draining groups: with this source the KV
target is not evaluated and drained groups go when `rollout.drainTimeoutSeconds` has passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SOURCE = "prometheus"  # the key of the synthetic router answer (also the Totals key for its counters)
API_PATH = "/api/v1/query"

# pool field of the router's JSON -> (aggregation, series)
QUERIES: dict[str, tuple[str, str]] = {
    "queued": ("sum", "supernode_router_pool_queued_requests"),
    "queuedTokens": ("sum", "supernode_router_pool_queued_tokens"),
    "oldestWaitSeconds": ("max", "supernode_router_pool_oldest_wait_seconds"),
    "inFlight": ("sum", "supernode_router_pool_inflight_requests"),
    "spilledTotal": ("sum", "supernode_router_pool_spilled_total"),
    "noCapacityTotal": ("sum", "supernode_router_pool_no_capacity_total"),
}


class PrometheusAnswerError(ValueError):
    """A Prometheus answer the autoscaler cannot use (the poll is then missing data)."""


def promql(field: str, selector: str = "") -> str:
    """The instant query for one pool field, e.g. `sum by (model, mode) (supernode_router_pool_queued_requests)`;
    `selector` (label matchers without braces, e.g. `namespace="supernode-system"`) narrows the series."""
    aggregation, series = QUERIES[field]
    matchers = f"{{{selector}}}" if selector else ""
    return f"{aggregation} by (model, mode) ({series}{matchers})"


def query_url(base: str, field: str, selector: str = "") -> tuple[str, dict[str, str]]:
    return base.rstrip("/") + API_PATH, {"query": promql(field, selector)}


def _vector(field: str, reply: Any) -> dict[tuple[str, str], float]:
    """(model, mode) → value of one instant-vector answer; PrometheusAnswerError when it is not one."""
    if not isinstance(reply, Mapping) or reply.get("status") != "success":
        error = reply.get("error") if isinstance(reply, Mapping) else None
        raise PrometheusAnswerError(f"{field}: query failed: {error or 'no status success'}")
    data = reply.get("data")
    if not isinstance(data, Mapping) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise PrometheusAnswerError(f"{field}: not an instant vector")
    out: dict[tuple[str, str], float] = {}
    for item in data["result"]:
        try:
            metric, (_, raw) = item["metric"], item["value"]
            model, mode, value = str(metric["model"]), str(metric.get("mode", "")), float(raw)
        except (KeyError, TypeError, ValueError) as e:
            raise PrometheusAnswerError(f"{field}: malformed series {item!r}") from e
        if not math.isfinite(value):
            raise PrometheusAnswerError(f"{field}: value {raw!r} for model {model!r} is not a finite number")
        out[(model, mode)] = value
    return out


def answers_from(replies: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The Prometheus answers (pool field → decoded JSON, one per QUERIES entry) as one router answer
    `{SOURCE: {"pools": [...]}}`. PrometheusAnswerError when one is missing or malformed, or when no query
    returned any series (Prometheus is not scraping the routers, or under other labels): missing data, the
    size is held — the same as a router that does not answer."""
    vectors = {}
    for field in QUERIES:
        if field not in replies:
            raise PrometheusAnswerError(f"{field}: no answer")
        vectors[field] = _vector(field, replies[field])
    keys = sorted(set().union(*vectors.values()))
    if not keys:
        raise PrometheusAnswerError("no supernode_router_pool_* series (is Prometheus scraping the routers?)")
    pools = [{"model": model, "mode": mode, **{f: vectors[f].get((model, mode), 0.0) for f in QUERIES}}
             for model, mode in keys]
    return {SOURCE: {"pools": pools}}
