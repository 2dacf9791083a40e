"""Builds the shared-state parts of a replica from config: the Redis client, limits and heartbeats."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from supernode.router.contracts import PoolCapacity
from supernode.router.shared.config import RedisState, redact, replica_id
from supernode.router.shared.fairshare import SharedFairness
from supernode.router.shared.gatekeeper import SharedGatekeeper
from supernode.router.shared.metrics import for_registry
from supernode.router.shared.redis_limits import RedisLimits
from supernode.router.shared.replicas import Replicas, SharedCapacity
from supernode.router.shared.store import RedisLimitStore


def redis_client(state: RedisState, *, max_connections: int = 64) -> Any:
    """A lazily connecting client (nothing is contacted here). The URL carries the password: it is
    handed to the client only, never logged (``redact`` for messages).

    A *blocking* pool: a burst of admissions waits for one of ``max_connections`` connections instead
    of failing (which the outage policy would read as Redis being down). A dead or hung Redis is
    detected by the per-socket timeouts (``state.timeoutSeconds``)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        state.resolve_url(), max_connections=max_connections, timeout=None,
        socket_timeout=state.timeout_seconds, socket_connect_timeout=state.timeout_seconds,
        retry_on_timeout=False, health_check_interval=30, client_name="supernode-router")
    return aioredis.Redis(connection_pool=pool)


def shared_parts(state: RedisState, capacity: PoolCapacity, registry: CollectorRegistry | None,
                 *, client: Any = None, replica: str | None = None) -> tuple[type[SharedGatekeeper], dict[str, Any]]:
    """(factory, keyword arguments) for ``build_gatekeeper``; ``capacity`` is this replica's share."""
    client = client if client is not None else redis_client(state)
    backend = for_registry(registry)
    limits = RedisLimits(client, state.key_prefix, lease_ttl_s=state.lease_ttl_seconds)
    store = RedisLimitStore(limits, backend, settle_timeout_s=max(2.0, state.timeout_seconds))
    replicas = Replicas(client, state.key_prefix, replica or replica_id(), ttl_s=max(3 * state.heartbeat_seconds, 1))
    extra: dict[str, Any] = {"capacity": SharedCapacity(capacity, replicas), "state": state, "store": store,
                             "replicas": replicas, "backend": backend,
                             "fairness": SharedFairness(client, state.key_prefix)}
    return SharedGatekeeper, extra


__all__ = ["redact", "redis_client", "shared_parts"]
