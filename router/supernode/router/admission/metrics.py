"""Prometheus collectors for admission, on a registry the caller owns (no globals).

All named ``supernode_router_admission_*`` so they can share the request path's registry. Each metric
has one owner: the queue length and rejections (admission's included) are the request path's
(supernode.router.metrics), which sees every answer the router gives; admission owns what only it
knows (waits by tier, grants, pool occupancy, tenants-file reloads).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WAIT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue_wait = Histogram(
            "supernode_router_admission_queue_wait_seconds",
            "Time admitted requests waited in the admission queue",
            ["tier"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.admitted = Counter(
            "supernode_router_admission_admitted_total", "Requests admitted", ["tier", "spilled"], registry=r
        )
        self.in_flight = Gauge(
            "supernode_router_admission_pool_in_flight",
            "Admitted requests in flight per pool",
            ["model", "mode"],
            registry=r,
        )
        self.tenants_reloads = Counter(
            "supernode_router_admission_tenants_reloads_total", "Tenants file reloads", ["result"], registry=r
        )
