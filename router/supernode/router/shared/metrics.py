"""Metrics of the shared-state backends (Redis admission state, PostgreSQL ledger), one set per registry.

The ledger and the gatekeeper are built separately but share the app's registry; ``for_registry``
hands both the same collectors (kept on the registry object, so nothing is module-global).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

_ATTR = "_supernode_backend_metrics"


class BackendMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = self.registry = registry
        self.up = Gauge("supernode_router_state_backend_up",
                        "1 = the shared-state backend answered its last call (backend: redis, postgres)",
                        ["backend"], registry=r)
        self.spool_depth = Gauge("supernode_router_ledger_spool_rows",
                                 "Ledger rows waiting in the local spool for PostgreSQL", registry=r)
        self.spool_replayed = Counter("supernode_router_ledger_spool_replayed_total",
                                      "Spooled ledger rows replayed into PostgreSQL", registry=r)
        self.spooled = Counter("supernode_router_ledger_spooled_total",
                               "Ledger rows written to the local spool (PostgreSQL unreachable)", registry=r)
        self.leases = Gauge("supernode_router_state_reservation_leases",
                            "Reservations this replica holds in the shared state (renewed while running)",
                            registry=r)
        self.leases_expired = Counter("supernode_router_state_reservation_leases_expired_total",
                                      "Reservations that expired unrenewed (their replica died or lost Redis)",
                                      registry=r)
        self.outage_decisions = Counter("supernode_router_state_outage_decisions_total",
                                        "Admissions decided while Redis was unreachable (policy: failOpen, "
                                        "failClosed)", ["policy"], registry=r)
        self.replicas = Gauge("supernode_router_state_replicas",
                              "Live router replicas seen in the shared heartbeats", registry=r)


def for_registry(registry: CollectorRegistry | None) -> BackendMetrics:
    if registry is None:
        return BackendMetrics(CollectorRegistry())
    got = getattr(registry, _ATTR, None)
    if got is None:
        got = BackendMetrics(registry)
        setattr(registry, _ATTR, got)
    return got
