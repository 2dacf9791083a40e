"""The gatekeeper of one replica in a fleet: tenant limits held in Redis, queues kept local.

It overrides the two seams of ``AdmissionGatekeeper``: ``_hold`` (check + charge every limit: one
Lua call) and ``_unhold`` (settle / refund, sent in the background). Its owned loop beats the replica
heartbeat (capacity share), renews the leases of running requests and notices Redis coming back.

Redis unreachable (error or ``state.timeoutSeconds``): per tenant ``failClosed`` → 503 with
Retry-After; ``failOpen`` → local limits at 1/N of the tenant's (N = replicas last seen), logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from supernode.router.admission.limits import TenantLimiter, month_start, next_month_start
from supernode.router.admission.service import Gatekeeper
from supernode.router.admission.tenants import TenantSpec
from supernode.router.contracts import RouterError, Tenant
from supernode.router.shared.config import RedisState
from supernode.router.shared.fairshare import SharedFairness
from supernode.router.shared.metrics import BackendMetrics
from supernode.router.shared.redis_limits import Decision, Limits, RedisLimits
from supernode.router.shared.replicas import Replicas

log = logging.getLogger("supernode.router.shared")
OUTAGE_ERRORS = (RedisError, OSError, TimeoutError)


class StateUnavailable(RouterError):
    status = 503
    code = "state_unavailable"


@dataclass(frozen=True, slots=True)
class Lease:
    tenant: str
    id: str
    tpm: int | None


def limits_of(spec: TenantSpec) -> Limits:
    return Limits(spec.rpm, spec.tpm, spec.max_concurrent, spec.monthly_token_quota)


def outage_spec(spec: TenantSpec, replicas: int, month_used: int) -> TenantSpec:
    """The tenant's limits at 1/N for a failOpen replica (the quota: 1/N of what was left)."""
    n = max(1, replicas)

    def part(v: int | None) -> int | None:
        return None if v is None else max(1, math.ceil(v / n))

    quota = spec.monthly_token_quota
    left = None if quota is None else max(1, math.ceil(max(0, quota - month_used) / n))
    return spec.model_copy(update={"rpm": part(spec.rpm), "tpm": part(spec.tpm),
                                   "max_concurrent": part(spec.max_concurrent), "monthly_token_quota": left})


class SharedGatekeeper(Gatekeeper):
    def __init__(self, *args: Any, state: RedisState, limits: RedisLimits, replicas: Replicas,
                 backend: BackendMetrics, fairness: SharedFairness | None = None, **kw: Any) -> None:
        self.state = state
        self.fairness = fairness
        self.limits = limits
        self.replicas = replicas
        self.backend = backend
        self._held: dict[str, dict[str, Lease]] = {}
        self._outage: dict[str, TenantLimiter] = {}
        self._month_used: dict[str, int] = {}
        self._up = True
        self._bg: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        super().__init__(*args, **kw)

    # --- the two seams ------------------------------------------------------------------------
    async def _hold(self, tenant: Tenant, limiter: TenantLimiter | None, estimate: int, now: float) -> Any:
        entry = self.directory.entry(tenant.id)
        if entry is None:  # auth disabled (anonymous): no limits to share
            return None
        spec = entry.spec
        lease = uuid.uuid4().hex
        wall = self._wall()
        try:  # the socket timeouts detect a dead Redis; this only bounds a pathological wait
            async with asyncio.timeout(max(5.0, 10 * self.state.timeout_seconds)):
                d = await self.limits.reserve(tenant.id, lease, estimate, limits_of(spec), wall)
        except OUTAGE_ERRORS as exc:
            self._set_up(False, exc)
            return await self._outage_hold(tenant, spec, estimate, now)
        self._set_up(True)
        if d.expired:
            self.backend.leases_expired.inc(d.expired)
        self._month_used[tenant.id] = d.month_used
        if not d.ok:
            raise self._reject(tenant, d.limit, self._message(spec, d), self._retry(d, wall))
        self._held.setdefault(tenant.id, {})[lease] = held = Lease(tenant.id, lease, spec.tpm)
        self.backend.leases.set(self.held_leases())
        return held

    def _unhold(self, hold: Any, tenant: Tenant, estimate: int, used: int) -> None:
        if not isinstance(hold, Lease):
            super()._unhold(hold, tenant, estimate, used)
            return
        self._held.get(hold.tenant, {}).pop(hold.id, None)
        self.backend.leases.set(self.held_leases())
        task = asyncio.get_running_loop().create_task(self._settle(hold, used), name="state-settle")
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _settle(self, lease: Lease, used: int) -> None:
        try:
            async with asyncio.timeout(max(self.state.timeout_seconds, 2.0)):
                live = await self.limits.settle(lease.tenant, lease.id, used, lease.tpm, self._wall())
            if not live:
                log.warning("reservation %s of tenant %s had expired before it was settled", lease.id, lease.tenant)
        except OUTAGE_ERRORS as exc:
            self._set_up(False, exc)
            log.error("could not settle reservation of tenant %s (%d tokens) in Redis: %s; it expires in %.0fs, "
                      "the ledger keeps the usage", lease.tenant, used, type(exc).__name__,
                      self.state.lease_ttl_seconds)

    # --- outage -------------------------------------------------------------------------------
    async def _outage_hold(self, tenant: Tenant, spec: TenantSpec, estimate: int, now: float) -> Any:
        policy = spec.state_outage or self.state.fail_policy
        self.backend.outage_decisions.labels(policy).inc()
        if policy == "failClosed":
            self.metrics.rejections.labels("state_unavailable", tenant.tier).inc()
            raise StateUnavailable("the shared admission state is unreachable; retry shortly",
                                   retry_after=max(1.0, self.state.heartbeat_seconds))
        lim = self._outage.get(tenant.id)
        if lim is None:
            scaled = outage_spec(spec, self.replicas.count, self._month_used.get(tenant.id, 0))
            lim = self._outage[tenant.id] = TenantLimiter.create(scaled, now, self._wall())
            log.warning("Redis unreachable: tenant %s admitted failOpen on local limits at 1/%d "
                        "(rpm=%s tpm=%s concurrent=%s quota left=%s)", tenant.id, self.replicas.count,
                        scaled.rpm, scaled.tpm, scaled.max_concurrent, scaled.monthly_token_quota)
        return await super()._hold(tenant, lim, estimate, now)

    def _set_up(self, up: bool, exc: BaseException | None = None) -> None:
        if up == self._up:
            return
        self._up = up
        self.backend.up.labels("redis").set(1.0 if up else 0.0)
        if up:
            log.warning("Redis reachable again: shared limits back in force")
            self._outage.clear()
        else:
            log.error("Redis unreachable (%s): outage policy per tenant applies", type(exc).__name__ if exc else "?")

    # --- owned loop ---------------------------------------------------------------------------
    def held_leases(self) -> int:
        return sum(len(v) for v in self._held.values())

    async def tick(self) -> None:
        """One heartbeat: replica set, lease renewal; on recovery the month counters are re-seeded."""
        was_up = self._up
        try:
            async with asyncio.timeout(max(self.state.timeout_seconds, 2.0)):
                members = await self.replicas.beat()
                for tenant, leases in list(self._held.items()):
                    if leases:
                        await self.limits.renew(tenant, list(leases))
                if self.fairness is not None:
                    await self.fairness.sync(self._queue, {e.tenant.priority for e in self.directory.entries()})
                if not was_up:
                    await self.seed_months()
        except OUTAGE_ERRORS as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the client turned our cancellation into an error
                raise asyncio.CancelledError from exc
            self._set_up(False, exc)
            return
        self._set_up(True)
        self.backend.replicas.set(len(members))

    async def seed_months(self) -> None:
        if self._usage_totals is None:
            return
        wall = self._wall()
        totals = await asyncio.to_thread(self._usage_totals, month_start(wall))
        await self.limits.seed_month(dict(totals), wall)

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.state.heartbeat_seconds)

    async def start(self) -> None:
        await super().start()
        if self._loop_task is not None:
            return
        self.backend.up.labels("redis").set(1.0)
        try:
            async with asyncio.timeout(max(self.state.timeout_seconds, 5.0)):
                await self.seed_months()
        except OUTAGE_ERRORS as exc:
            self._set_up(False, exc)
        await self.tick()
        self._loop_task = asyncio.create_task(self._run(), name="state-heartbeat")

    async def stop(self) -> None:
        task, self._loop_task = self._loop_task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)
        with contextlib.suppress(*OUTAGE_ERRORS):
            async with asyncio.timeout(1.0):
                await self.replicas.beat(alive=False)
        await super().stop()
        await self.limits.client.aclose()

    # --- messages -----------------------------------------------------------------------------
    @staticmethod
    def _message(spec: TenantSpec, d: Decision) -> str:
        return {
            "monthly_token_quota": f"monthly token quota of {spec.monthly_token_quota} reached "
                                   f"({d.month_used} used, {d.reserved} reserved by requests in flight)",
            "max_concurrent": f"{spec.max_concurrent} requests in flight (the limit, across all router replicas)",
            "rpm": f"rate limit of {spec.rpm} requests per minute reached",
            "tpm": f"rate limit of {spec.tpm} tokens per minute reached",
        }.get(d.limit, d.limit)

    def _retry(self, d: Decision, wall: float) -> float:
        if d.limit == "monthly_token_quota":
            return max(1.0, next_month_start(wall) - wall)
        return max(1.0, d.retry_after)
