"""Builds the admission and metering sides from RouterConfig, and the PoolCapacity they read."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from supernode.router.admission import build_gatekeeper
from supernode.router.admission.config import CapacityConfig
from supernode.router.config import RouterConfig
from supernode.router.contracts import Gatekeeper, Meter, PoolCapacity, PoolKey
from supernode.router.metering import build_meter
from supernode.router.open_admission import LogMeter, OpenGatekeeper
from supernode.router.routing.state import EndpointTable
from supernode.router.shared.config import RedisState

log = logging.getLogger("supernode.router")

GatekeeperFactory = Callable[[RouterConfig, PoolCapacity], Gatekeeper]
MeterFactory = Callable[[RouterConfig], Meter]


class TableCapacity:
    """PoolCapacity from discovery: ready, healthy, non-draining endpoints x per-group concurrency,
    scaled by admission's `capacity_limited_factor` when the deployment reports CapacityLimited."""

    def __init__(self, table: EndpointTable, config: CapacityConfig | None):
        self.table = table
        self.config = config

    def capacity(self, pool: PoolKey) -> int:
        ready = [s.endpoint for s in self.table
                 if s.endpoint.model == pool.model and pool.mode in s.endpoint.modes
                 and s.endpoint.ready and s.healthy and not s.endpoint.draining]
        if not ready:
            return 0
        if self.config is None:
            return sum(ep.max_concurrency for ep in ready)
        n = sum(self.config.group_concurrency(pool.model, ep.max_concurrency) for ep in ready)
        if any(ep.capacity_limited for ep in ready):
            n = max(1, math.floor(n * self.config.capacity_limited_factor))
        return n


def make_meter(config: RouterConfig, registry: CollectorRegistry) -> Meter:
    if config.metering is None:
        return LogMeter()
    return build_meter(config.metering, registry=registry)


def make_gatekeeper(config: RouterConfig, capacity: PoolCapacity, meter: Meter,
                    registry: CollectorRegistry) -> Gatekeeper:
    if config.admission is None:
        log.warning("AUTH DISABLED: no admission section; every request runs as tenant 'anonymous' (configure "
                    "admission.tenantsFile, or admission.anonymous: true to say so explicitly)")
        return OpenGatekeeper(capacity)
    totals = getattr(meter, "tokens_by_tenant", None)  # monthly quotas resume from the ledger
    if isinstance(config.state, RedisState):  # several replicas: limits in Redis, capacity shared out
        from supernode.router.shared.build import shared_parts

        factory, extra = shared_parts(config.state, capacity, registry)
        return build_gatekeeper(config.admission, extra.pop("capacity"), usage_totals=totals, registry=registry,
                                wall_clock=time.time, factory=factory, **extra)
    return build_gatekeeper(config.admission, capacity, usage_totals=totals, registry=registry, wall_clock=time.time)


def keepalive_seconds(config: RouterConfig) -> float:
    if config.admission is not None:
        return config.admission.queue.keepalive_interval_seconds
    return config.timeouts.keepalive_s
