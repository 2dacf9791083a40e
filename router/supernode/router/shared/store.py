"""Tenant limits in Redis behind admission's ``LimitStore`` protocol (reserve → settle | refund).

``reserve`` is one Lua script: it checks and charges every limit and caps the completion tokens at
what the monthly quota leaves, like the local store. ``settle`` and
``refund`` are sent in the background (the request path never waits for them); a reservation that is
never settled (its replica died) is a lease that expires. While Redis is unreachable, failOpen
tenants reserve from ``outage``: a local store holding each tenant's limits at 1/N.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernode.router.admission.limits import Verdict, next_month_start
from supernode.router.admission.reservations import LocalLimitStore, Reservation
from supernode.router.admission.tenants import TenantSpec
from supernode.router.shared.metrics import BackendMetrics
from supernode.router.shared.redis_limits import Decision, Limits, RedisLimits

log = logging.getLogger("supernode.router.shared")


@dataclass(frozen=True, slots=True)
class Lease(Reservation):
    """A reservation held in Redis; ``lease`` is renewed while the request runs."""

    lease: str = ""
    tpm: int | None = None


def limits_of(spec: TenantSpec) -> Limits:
    return Limits(spec.rpm, spec.tpm, spec.max_concurrent, spec.monthly_token_quota)


def has_limits(spec: TenantSpec) -> bool:
    return any(v is not None for v in (spec.rpm, spec.tpm, spec.max_concurrent, spec.monthly_token_quota))


def outage_spec(spec: TenantSpec, replicas: int, month_used: int) -> TenantSpec:
    """The tenant's limits at 1/N for a failOpen replica (the quota: 1/N of what was left)."""
    n = max(1, replicas)

    def part(v: int | None) -> int | None:
        return None if v is None else max(1, math.ceil(v / n))

    quota = spec.monthly_token_quota
    left = None if quota is None else max(1, math.ceil(max(0, quota - month_used) / n))
    return spec.model_copy(update={"rpm": part(spec.rpm), "tpm": part(spec.tpm),
                                   "max_concurrent": part(spec.max_concurrent), "monthly_token_quota": left})


def verdict_of(spec: TenantSpec, d: Decision, wall: float) -> Verdict:
    """A refusal from Redis as admission's Verdict: the limit, a message naming it, when to retry."""
    message = {
        "monthly_token_quota": f"monthly token quota of {spec.monthly_token_quota} reached "
                               f"({d.month_used} used, {d.reserved} reserved by requests in flight)",
        "max_concurrent": f"{spec.max_concurrent} requests in flight (the limit, across all router replicas)",
        "rpm": f"rate limit of {spec.rpm} requests per minute reached",
        "tpm": f"rate limit of {spec.tpm} tokens per minute reached",
    }.get(d.limit, d.limit)
    retry = next_month_start(wall) - wall if d.limit == "monthly_token_quota" else d.retry_after
    return Verdict(d.limit, max(1.0, retry), message)


class RedisLimitStore:
    """``LimitStore`` over ``RedisLimits`` (+ the leases this replica holds, for renewal)."""

    def __init__(self, limits: RedisLimits, backend: BackendMetrics, *, settle_timeout_s: float) -> None:
        self.redis = limits
        self.backend = backend
        self.settle_timeout_s = settle_timeout_s
        self.specs: dict[str, TenantSpec] = {}
        self.seed: dict[str, int] = {}  # monthly usage from the ledger, written to Redis with SET NX
        self.held: dict[str, dict[str, Lease]] = {}
        self.month_used: dict[str, int] = {}
        self.reserved: dict[str, int] = {}
        self.outage = LocalLimitStore()
        self.on_error: Any = None  # called with the exception when a background settle fails
        self._bg: set[asyncio.Task[None]] = set()

    # --- LimitStore ---------------------------------------------------------------------------
    def needs_seed(self, specs: Sequence[TenantSpec]) -> bool:
        return any(s.id not in self.specs for s in specs)

    def sync(self, specs: Sequence[TenantSpec], now: float, wall: float,
             used: Mapping[str, int] | None = None) -> None:
        self.specs = {s.id: s for s in specs}
        for tid, n in (used or {}).items():
            self.seed.setdefault(tid, int(n))

    async def reserve(self, tenant_id: str, prompt_tokens: int, max_tokens: int, now: float,
                      wall: float) -> Lease | Verdict:
        spec = self.specs.get(tenant_id)
        prompt = prompt_tokens
        if spec is None or not has_limits(spec):
            return Lease(tenant_id, max(0, prompt) + max(1, max_tokens), max(1, max_tokens), limited=False)
        lease = uuid.uuid4().hex
        d = await self.redis.reserve(tenant_id, lease, prompt, max_tokens, limits_of(spec), wall)
        if d.expired:
            self.backend.leases_expired.inc(d.expired)
        self.month_used[tenant_id], self.reserved[tenant_id] = d.month_used, d.reserved
        if not d.ok:
            return verdict_of(spec, d, wall)
        held = Lease(tenant_id, max(0, prompt) + d.granted, d.granted, lease=lease, tpm=spec.tpm)
        self.held.setdefault(tenant_id, {})[lease] = held
        self.backend.leases.set(self.held_count())
        return held

    def settle(self, r: Reservation, used_tokens: int, now: float, wall: float) -> None:
        if not isinstance(r, Lease):
            self.outage.settle(r, used_tokens, now, wall)  # admitted failOpen while Redis was down
            return
        if not r.limited:
            return
        self.held.get(r.tenant_id, {}).pop(r.lease, None)
        self.backend.leases.set(self.held_count())
        task = asyncio.get_running_loop().create_task(self._settle(r, max(0, used_tokens), wall), name="state-settle")
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def refund(self, r: Reservation, now: float, wall: float) -> None:
        self.settle(r, 0, now, wall)

    def usage(self, tenant_id: str) -> dict[str, Any]:
        """As of this replica's last admission of the tenant (the shared counters live in Redis)."""
        return {"in_flight_here": len(self.held.get(tenant_id, {})), "month_tokens": self.month_used.get(tenant_id, 0),
                "reserved_tokens": self.reserved.get(tenant_id, 0), "shared": True}

    # --- background ---------------------------------------------------------------------------
    async def _settle(self, lease: Lease, used: int, wall: float) -> None:
        try:
            async with asyncio.timeout(self.settle_timeout_s):
                live = await self.redis.settle(lease.tenant_id, lease.lease, used, lease.tpm, wall)
            if not live:
                log.warning("reservation of tenant %s had expired before it was settled", lease.tenant_id)
        except Exception as exc:  # any failure: the lease expires by itself, the ledger keeps the usage
            log.error("could not settle a reservation of tenant %s (%d tokens) in Redis: %s; it expires by "
                      "itself, the ledger keeps the usage", lease.tenant_id, used, type(exc).__name__)
            if self.on_error is not None:
                self.on_error(exc)

    async def drain(self) -> None:
        if self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)

    def held_count(self) -> int:
        return sum(len(v) for v in self.held.values())

    async def renew(self) -> None:
        for tenant, leases in list(self.held.items()):
            if leases:
                await self.redis.renew(tenant, list(leases))

    async def seed_months(self, totals: Mapping[str, int], wall: float) -> None:
        await self.redis.seed_month(dict(totals), wall)

    def use_outage(self, spec: TenantSpec, replicas: int, now: float, wall: float) -> None:
        """Install the tenant's 1/N limits in the outage store (once per outage)."""
        if spec.id not in self.outage.limiters:
            scaled = outage_spec(spec, replicas, self.month_used.get(spec.id, 0))
            self.outage.sync([*(lim.spec for lim in self.outage.limiters.values()), scaled], now, wall)
            log.warning("Redis unreachable: tenant %s admitted failOpen on local limits at 1/%d (rpm=%s tpm=%s "
                        "concurrent=%s quota left=%s)", spec.id, replicas, scaled.rpm, scaled.tpm,
                        scaled.max_concurrent, scaled.monthly_token_quota)

    def end_outage(self) -> None:
        self.outage.limiters = {t: lim for t, lim in self.outage.limiters.items() if lim.in_flight}
