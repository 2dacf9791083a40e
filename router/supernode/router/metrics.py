"""The router's Prometheus metrics, on a registry owned by one app (no global registry).

One owner per metric: the request path owns everything here, including the queue length (read from
the gatekeeper at scrape time) and every rejection it answers (admission's limits included);
admission's own collectors (supernode.router.admission.metrics) cover only what admission alone
knows. Histograms carry no `tenant` label (a series per tenant x bucket grows without bound);
per-tenant counts are on the counters. Endpoint series are removed when discovery drops the endpoint.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self._endpoint_models: dict[str, set[str]] = {}  # endpoint -> model label values it has series for
        self._inflight_keys: set[str] = set()
        self._mode_keys: set[str] = set()
        self._blocks_keys: set[str] = set()
        by = ["model", "mode", "tenant"]  # counters
        hist = ["model", "mode"]  # histograms: no tenant
        self.requests = Counter("supernode_router_requests_total", "Requests answered", [*by, "code"], registry=r)
        self.tokens = Counter("supernode_router_tokens_total", "Tokens by kind (prompt, cached, completion, "
                              "reasoning)", [*by, "kind"], registry=r)
        self.ttft = Histogram("supernode_router_time_to_first_token_seconds", "Time to first token", hist,
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("supernode_router_inter_token_latency_seconds", "Time between streamed chunks", hist,
                             buckets=(*FAST_BUCKETS, 0.25, 0.5, 1, 2.5), registry=r)
        self.e2e = Histogram("supernode_router_request_duration_seconds", "End-to-end request latency", hist,
                             buckets=LATENCY_BUCKETS, registry=r)
        # queue waits: supernode_router_admission_queue_wait_seconds{tier} (admission's; waits exist only there)
        self.queue_length = Gauge("supernode_router_queue_length", "Requests waiting for admission", registry=r)
        self.routing_latency = Histogram("supernode_router_routing_decision_seconds", "Routing decision time",
                                         buckets=FAST_BUCKETS, registry=r)
        self.prefix_lookup_blocks = Counter("supernode_router_prefix_lookup_blocks_total",
                                            "Prompt blocks looked up in the prefix index", registry=r)
        self.prefix_hit_blocks = Counter("supernode_router_prefix_hit_blocks_total",
                                         "Prompt blocks the chosen endpoint was believed to hold", registry=r)
        self.prefix_hit_ratio = Gauge("supernode_router_prefix_hit_ratio",
                                      "Hit blocks / looked-up blocks since start", registry=r)
        self.rejections = Counter("supernode_router_rejections_total", "Requests rejected: admission limits "
                                  "(rpm, tpm, queue_full, queue_wait, queue_timeout, ...), auth, size, capacity",
                                  ["reason"], registry=r)
        self.retries = Counter("supernode_router_retries_total", "Attempts on another endpoint", ["reason"],
                               registry=r)
        self.inflight = Gauge("supernode_router_inflight_requests", "Requests open upstream", ["endpoint"],
                              registry=r)
        self.endpoint_healthy = Gauge("supernode_router_endpoint_healthy", "1 = routable", ["endpoint", "model"],
                                      registry=r)
        self.endpoint_load = Gauge("supernode_router_endpoint_load", "running + waiting as last seen",
                                   ["endpoint", "model"], registry=r)
        self.endpoint_capacity = Gauge("supernode_router_endpoint_capacity", "Capacity weight the endpoint's load "
                                       "is divided by: measured from its traffic once it has enough samples, else "
                                       "its pool's declared capacityWeight", ["endpoint", "model"], registry=r)
        self.endpoints = Gauge("supernode_router_endpoints", "Endpoints known to discovery", registry=r)
        self.prefix_index_mode = Gauge("supernode_router_prefix_index_mode", "1 for the prefix index an endpoint "
                                       "is scored with: precise (its engine's KV events) or approximate",
                                       ["endpoint", "mode"], registry=r)
        self.prefix_index_ranks = Gauge("supernode_router_prefix_index_ranks", "Data-parallel ranks the precise "
                                        "index follows apart for an endpoint (one KV event feed and one cache "
                                        "each); set for endpoints with several", ["endpoint"], registry=r)
        self.prefix_index_blocks = Gauge("supernode_router_prefix_index_blocks", "KV blocks the precise index "
                                         "holds for an endpoint (what its engine reported caching), as of the "
                                         "last health probe", ["endpoint"], registry=r)
        self.kv_event_errors = Counter("supernode_router_kv_events_malformed_total",
                                       "Times an endpoint's KV events were malformed (it fell back to approximate)",
                                       ["endpoint"], registry=r)
        self.ejections = Counter("supernode_router_endpoint_ejections_total", "Endpoints taken out of routing "
                                 "(reason: errors, probe, device-fault)", ["reason"], registry=r)
        self.discovery_events = Counter("supernode_router_discovery_watch_events_total",
                                        "Kubernetes watch events applied", ["resource", "type"], registry=r)
        self.discovery_lists = Counter("supernode_router_discovery_lists_total", "Kubernetes full LISTs "
                                       "(reason: initial, resync, expired, error)", ["resource", "reason"], registry=r)
        self.discovery_errors = Counter("supernode_router_discovery_errors_total",
                                        "Failed Kubernetes lists / watches", ["resource"], registry=r)

    def _endpoint_gauges(self) -> tuple[Gauge, ...]:
        return self.endpoint_healthy, self.endpoint_load, self.endpoint_capacity

    def _track(self, key: str, model: str) -> None:
        models = self._endpoint_models.setdefault(key, set())
        for stale in models - {model}:  # the endpoint now announces another model
            for gauge in self._endpoint_gauges():
                with contextlib.suppress(KeyError):
                    gauge.remove(key, stale)
        models.intersection_update({model})
        models.add(model)

    def set_endpoint(self, key: str, model: str, *, healthy: bool, load: float, capacity: float | None = None) -> None:
        self._track(key, model)
        self.endpoint_healthy.labels(key, model).set(1.0 if healthy else 0.0)
        self.endpoint_load.labels(key, model).set(load)
        if capacity is not None:
            self.endpoint_capacity.labels(key, model).set(capacity)

    def set_capacity(self, key: str, model: str, capacity: float) -> None:
        self._track(key, model)
        self.endpoint_capacity.labels(key, model).set(capacity)

    def forget_endpoint(self, key: str) -> None:
        """Discovery dropped the endpoint: its series go too (no stale gauges for gone endpoints)."""
        for model in self._endpoint_models.pop(key, set()):
            for gauge in self._endpoint_gauges():
                with contextlib.suppress(KeyError):
                    gauge.remove(key, model)
        if key in self._inflight_keys:
            self._inflight_keys.discard(key)
            self.inflight.remove(key)
        if key in self._mode_keys:
            self._mode_keys.discard(key)
            for mode in ("precise", "approximate"):
                self.prefix_index_mode.remove(key, mode)
        if key in self._blocks_keys:
            self._blocks_keys.discard(key)
            self.prefix_index_blocks.remove(key)
        with contextlib.suppress(KeyError):
            self.prefix_index_ranks.remove(key)
        with contextlib.suppress(KeyError):
            self.kv_event_errors.remove(key)

    def kv_events_malformed(self, key: str) -> None:
        self.kv_event_errors.labels(key).inc()

    def set_prefix_mode(self, key: str, precise: bool) -> None:
        self._mode_keys.add(key)
        self.prefix_index_mode.labels(key, "precise").set(1.0 if precise else 0.0)
        self.prefix_index_mode.labels(key, "approximate").set(0.0 if precise else 1.0)

    def set_prefix_ranks(self, key: str, ranks: int) -> None:
        self.prefix_index_ranks.labels(key).set(float(ranks))

    def set_prefix_blocks(self, key: str, blocks: int) -> None:
        self._blocks_keys.add(key)
        self.prefix_index_blocks.labels(key).set(float(blocks))

    def set_inflight(self, key: str, value: float) -> None:
        self._inflight_keys.add(key)
        self.inflight.labels(key).set(value)

    def record_prefix(self, hit: int, total: int) -> None:
        if total <= 0:
            return
        self.prefix_lookup_blocks.inc(total)
        self.prefix_hit_blocks.inc(hit)
        looked = self.prefix_lookup_blocks._value.get()
        self.prefix_hit_ratio.set(self.prefix_hit_blocks._value.get() / looked if looked else 0.0)
