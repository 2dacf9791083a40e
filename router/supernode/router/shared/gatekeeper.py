"""The gatekeeper of one replica in a fleet: tenant limits held in Redis, queues kept local.

It is admission's gatekeeper with a ``RedisLimitStore`` (one Lua call per reservation) and one
override, ``_reserve``, which applies the outage policy when Redis does not answer. Its owned loop
beats the replica heartbeat (capacity share), renews the leases of running requests, syncs the
fair-share counters and notices Redis coming back.

Redis unreachable (a connection error or a socket timeout): per tenant ``failClosed`` → 503 with
Retry-After; ``failOpen`` → local limits at 1/N of the tenant's (N = replicas last seen), logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from supernode.router.admission.gatekeeper import Gatekeeper
from supernode.router.admission.limits import month_start
from supernode.router.admission.reservations import Reservation
from supernode.router.admission.tenants import TenantSpec
from supernode.router.contracts import Tenant
from supernode.router.errors import StateUnavailable
from supernode.router.shared.config import RedisState
from supernode.router.shared.fairshare import SharedFairness
from supernode.router.shared.metrics import BackendMetrics
from supernode.router.shared.replicas import Replicas
from supernode.router.shared.store import RedisLimitStore

log = logging.getLogger("supernode.router.shared")
OUTAGE_ERRORS = (RedisError, OSError, TimeoutError)


class SharedGatekeeper(Gatekeeper):
    def __init__(self, *args: Any, state: RedisState, store: RedisLimitStore, replicas: Replicas,
                 backend: BackendMetrics, fairness: SharedFairness | None = None, **kw: Any) -> None:
        self.state = state
        self.store = store
        self.replicas = replicas
        self.backend = backend
        self.fairness = fairness
        self._up = True
        self._loop_task: asyncio.Task[None] | None = None
        store.on_error = lambda exc: self._set_up(False, exc) if isinstance(exc, OUTAGE_ERRORS) else None
        super().__init__(*args, limits=store, **kw)

    # --- the seam ----------------------------------------------------------------------------
    async def _reserve(self, tenant: Tenant, prompt: int, max_tokens: int, now: float) -> Reservation:
        try:  # the socket timeouts detect a dead Redis; this only bounds a pathological wait
            async with asyncio.timeout(max(5.0, 10 * self.state.timeout_seconds)):
                got = await super()._reserve(tenant, prompt, max_tokens, now)
        except OUTAGE_ERRORS as exc:
            self._set_up(False, exc)
            entry = self.directory.entry(tenant.id)
            if entry is None:
                return Reservation(tenant.id, prompt + max(1, max_tokens), max(1, max_tokens), limited=False)
            return self._outage_reserve(tenant, entry.spec, prompt, max_tokens, now)
        self._set_up(True)
        return got

    def _outage_reserve(self, tenant: Tenant, spec: TenantSpec, prompt: int, max_tokens: int,
                        now: float) -> Reservation:
        policy = spec.state_outage or self.state.fail_policy
        self.backend.outage_decisions.labels(policy).inc()
        if policy == "failClosed":
            raise StateUnavailable("the shared admission state is unreachable; retry shortly",
                                   retry_after=max(1.0, self.state.heartbeat_seconds))
        self.store.use_outage(spec, self.replicas.count, now, self._wall())
        res = self.store.outage.reserve_now(tenant.id, prompt, max_tokens, now, self._wall())
        if isinstance(res, Reservation):
            return res
        raise self._reject(tenant, res.limit, res.message, res.retry_after)

    def _set_up(self, up: bool, exc: BaseException | None = None) -> None:
        if up == self._up:
            return
        self._up = up
        self.backend.up.labels("redis").set(1.0 if up else 0.0)
        if up:
            log.warning("Redis reachable again: shared limits back in force")
            self.store.end_outage()
        else:
            log.error("Redis unreachable (%s): outage policy per tenant applies", type(exc).__name__ if exc else "?")

    # --- owned loop ---------------------------------------------------------------------------
    def held_leases(self) -> int:
        return self.store.held_count()

    async def tick(self) -> None:
        """One heartbeat: replica set, lease renewal, fair-share sync; on recovery the month counters
        are re-seeded from the ledger."""
        was_up = self._up
        try:
            async with asyncio.timeout(max(self.state.timeout_seconds, 2.0)):
                members = await self.replicas.beat()
                await self.store.renew()
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
        wall = self._wall()
        totals = dict(self.store.seed)
        if self._usage_totals is not None:
            totals = dict(await asyncio.to_thread(self._usage_totals, month_start(wall)))
        await self.store.seed_months(totals, wall)

    async def _run(self) -> None:
        me = asyncio.current_task()
        while True:
            await self.tick()
            if me is not None and me.cancelling():  # a cancel that a client call swallowed still ends the loop
                raise asyncio.CancelledError
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
        await self.store.drain()
        try:
            async with asyncio.timeout(1.0):
                await self.replicas.beat(alive=False)
        except OUTAGE_ERRORS:
            pass
        await super().stop()
        await self.store.redis.client.aclose()
