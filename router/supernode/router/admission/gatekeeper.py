"""The Gatekeeper: tenant limits → spill-over candidates → capacity-bounded fair priority queue, with its
owned background tasks (tenants-file reload by mtime poll: tenants_reload.py; capacity poll)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernode.api.models import Mode
from supernode.router.admission.config import AdmissionConfig
from supernode.router.admission.fairqueue import FairQueue, Waiter
from supernode.router.admission.limits import TenantLimiter, Verdict, month_start
from supernode.router.admission.metrics import AdmissionMetrics
from supernode.router.admission.reservations import LimitStore, LocalLimitStore, Reservation
from supernode.router.admission.tenants import TenantDirectory, TenantEntry
from supernode.router.admission.tenants_reload import TenantsFileReload
from supernode.router.admission.ticket import AdmissionTicket
from supernode.router.contracts import PoolCapacity, PoolKey, RequestContext, SpillRule, Tenant, Usage
from supernode.router.errors import AdmissionRejected, ForbiddenError, NoCapacity

log = logging.getLogger("supernode.router.admission")

UsageTotals = Callable[[float], Mapping[str, int]]  # month start (unix) → tokens used per tenant


@dataclass(slots=True)
class _Pending:
    fut: asyncio.Future[AdmissionTicket]
    tenant: Tenant
    requested: PoolKey
    reservation: Reservation


class Gatekeeper:
    """``start()`` / ``stop()`` are owned by the app lifespan; both are idempotent."""

    _tasks: list[asyncio.Task[None]]

    def __init__(
        self,
        config: AdmissionConfig,
        capacity: PoolCapacity,
        directory: TenantDirectory,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        usage_totals: UsageTotals | None = None,
        metrics: AdmissionMetrics | None = None,
        limits: LimitStore | None = None,
    ) -> None:
        self.config = config
        self._capacity = capacity
        self._clock, self._wall = clock, wall_clock
        self._usage_totals = usage_totals
        self.metrics = metrics or AdmissionMetrics()
        self._queue = FairQueue()
        self._in_flight: dict[PoolKey, int] = {}
        self._service_time: dict[PoolKey, float] = {}  # EWMA of admitted → released seconds
        self.limits: LimitStore = limits if limits is not None else LocalLimitStore()
        self._rules = config.spill_over.rules_by_source()
        self.wait_observers: list[Callable[[Tenant, float], None]] = []  # metrics hook for queue waits
        self.directory = directory
        self._set_directory(directory)
        self.tenants_file = TenantsFileReload(config.tenants_file, lambda: self.directory, self.replace_directory,
                                              self.metrics)

    # --- tenants -----------------------------------------------------------------------------
    def _set_directory(self, directory: TenantDirectory) -> None:
        now, wall = self._clock(), self._wall()
        used: Mapping[str, int] = {}
        specs = [e.spec for e in directory.entries()]
        if self._usage_totals is not None and self.limits.needs_seed(specs):
            used = self._usage_totals(month_start(wall))  # quotas survive restarts: counted from the ledger
        self.limits.sync(specs, now, wall, used)
        self.directory = directory
        if not directory.enabled:
            log.warning(
                "AUTH DISABLED (admission.anonymous: true): every request runs as tenant 'anonymous' without "
                "limits%s", f" ({directory.source})" if directory.source else "",
            )
        else:
            log.info("tenants loaded from %s: %d tenants", directory.source, len(directory.entries()))

    def replace_directory(self, directory: TenantDirectory) -> None:
        self._set_directory(directory)

    def authenticate(self, api_key: str | None) -> Tenant:
        return self.directory.authenticate(api_key)

    @property
    def _limiters(self) -> dict[str, TenantLimiter]:
        """The local store's limiters (tests and introspection; empty for another store)."""
        return self.limits.limiters if isinstance(self.limits, LocalLimitStore) else {}

    def tenants(self) -> list[dict[str, Any]]:
        out = self.directory.describe()
        for d in out:
            d["usage"] = self.limits.usage(d["id"])
        return out

    # --- admission ---------------------------------------------------------------------------
    def candidates(self, tenant: Tenant, pools: Sequence[PoolKey]) -> tuple[PoolKey, ...]:
        """The caller's pools, each followed by its spill-over targets (tenant rules override global),
        deduplicated; only the first pool when spill-over is off for this tenant."""
        if not pools:
            return ()
        entry = self.directory.entry(tenant.id)
        if not self.config.spill_over.enabled or (entry is not None and not entry.spec.spill_over):
            return (pools[0],)
        rules: dict[PoolKey, SpillRule] = {**self._rules, **(entry.spill_rules() if entry else {})}
        out: list[PoolKey] = []
        todo = list(pools)
        while todo and len(out) < 16:
            p = todo.pop(0)
            if p in out:
                continue
            out.append(p)
            todo[0:0] = [t for t in (rules[p].targets if p in rules else ()) if t not in out]
        return tuple(p for p in out if self._allowed(tenant, p))

    @staticmethod
    def _allowed(tenant: Tenant, pool: PoolKey) -> bool:
        return (not tenant.allowed_models or pool.model in tenant.allowed_models) and (
            not tenant.allowed_modes or pool.mode in tenant.allowed_modes
        )

    def _reject(self, tenant: Tenant, limit: str, message: str, retry_after: float) -> AdmissionRejected:
        log.info("rejected tenant=%s limit=%s retry_after=%.1f: %s", tenant.id, limit, retry_after, message)
        return AdmissionRejected(message, limit=limit, retry_after=max(1.0, round(retry_after, 1)))

    async def admit(self, ctx: RequestContext, pools: Sequence[PoolKey]) -> AdmissionTicket:
        tenant = ctx.tenant
        if not pools:
            raise NoCapacity(f"no pool serves model {ctx.model!r} in mode {ctx.mode.value!r}")
        requested = pools[0]
        if not self._allowed(tenant, requested):
            raise ForbiddenError(f"tenant {tenant.id!r} may not use {requested.model} in mode {requested.mode.value}")
        if ctx.token_id_prompt and tenant.allowed_modes and set(tenant.allowed_modes) != set(Mode):
            allowed = ", ".join(m.value for m in tenant.allowed_modes)
            raise ForbiddenError(f"tenant {tenant.id!r} is limited to modes {allowed}: send the prompt as text, "
                                 "not token ids (ids could open a mode the tenant may not use)")
        prompt, max_tokens = max(0, ctx.prompt_tokens_estimate), max(1, ctx.max_tokens)
        now = self._clock()
        if not self.config.throttling:
            free = Reservation(tenant.id, prompt + max_tokens, max_tokens, limited=False)
            return self._grant(ctx.tenant, requested, requested, free, now, now)
        cands = tuple(p for p in self.candidates(tenant, pools) if self._capacity.capacity(p) > 0)
        if not cands:
            raise NoCapacity(
                f"no ready endpoint serves {requested.model} in mode {requested.mode.value}", retry_after=1.0
            )
        q = self.config.queue
        if len(self._queue) >= q.max_queue_length and not any(self._room(p) for p in cands):
            raise self._reject(tenant, "queue_full", f"admission queue full ({len(self._queue)} waiting)", 1.0)
        expected = self.expected_wait(tenant.priority, cands)
        if expected > q.max_wait_seconds:
            raise self._reject(
                tenant,
                "queue_wait",
                f"expected queue wait {expected:.1f}s exceeds the bound of {q.max_wait_seconds:.0f}s",
                expected - q.max_wait_seconds,
            )
        res = await self._reserve(tenant, prompt, max_tokens, now)  # checks + charges at once
        fut: asyncio.Future[AdmissionTicket] = asyncio.get_running_loop().create_future()
        pending = _Pending(fut, tenant, requested, res)
        waiter = Waiter(tenant.id, tenant.priority, res.tokens, cands, now, handle=pending)
        self._queue.add(waiter)
        self._dispatch()
        if fut.done():
            return fut.result()
        try:
            async with asyncio.timeout(q.max_wait_seconds):
                return await asyncio.shield(fut)
        except TimeoutError:
            self._abandon(waiter, res)
            raise self._reject(
                tenant,
                "queue_timeout",
                f"waited {q.max_wait_seconds:.0f}s in the admission queue",
                self.expected_wait(tenant.priority, cands) or q.max_wait_seconds,
            ) from None
        except asyncio.CancelledError:
            self._abandon(waiter, res)
            raise

    async def _reserve(self, tenant: Tenant, prompt: int, max_tokens: int, now: float) -> Reservation:
        """Reserve from the limit store or raise AdmissionRejected. The seam a store that must be
        awaited (shared state in Redis: supernode.router.shared) overrides."""
        res = await self.limits.reserve(tenant.id, prompt, max_tokens, now, self._wall())
        if isinstance(res, Verdict):
            raise self._reject(tenant, res.limit, res.message, res.retry_after)
        return res

    def _abandon(self, waiter: Waiter, res: Reservation) -> None:
        """A waiter left (deadline or client disconnect): out of the queue, its charge refunded; if it
        was granted in the same instant, the grant is released."""
        fut = waiter.handle.fut
        if self._queue.remove(waiter):
            self.limits.refund(res, self._clock(), self._wall())
        elif fut.done() and not fut.cancelled():
            fut.result().release(Usage())
        if not fut.done():
            fut.cancel()

    def expected_wait(self, priority: int, pools: tuple[PoolKey, ...]) -> float:
        """Waiters ahead (same or better tier) x mean service time / concurrency, when no pool has room;
        0 before any service time was observed."""
        if any(self._room(p) for p in pools):
            return 0.0
        times = [self._service_time[p] for p in pools if p in self._service_time]
        slots = sum(self._capacity.capacity(p) for p in pools)
        if not times or slots <= 0:
            return 0.0
        return (self._queue.ahead_of(priority, pools) + 1) * (sum(times) / len(times)) / slots

    def _room(self, pool: PoolKey) -> bool:
        return self._in_flight.get(pool, 0) < self._capacity.capacity(pool)

    def _dispatch(self) -> None:
        """Grant queued waiters, in fair order, while their pools have room."""
        while len(self._queue):
            got = self._queue.pop_grantable(self._room)
            if got is None:
                break
            waiter, pool = got
            pending: _Pending = waiter.handle
            now = self._clock()
            ticket = self._grant(pending.tenant, pending.requested, pool, pending.reservation, waiter.enqueued_at, now)
            pending.fut.set_result(ticket)
        self._queue.prune()

    def _grant(
        self, tenant: Tenant, requested: PoolKey, pool: PoolKey, res: Reservation, enqueued: float, now: float
    ) -> AdmissionTicket:
        self._in_flight[pool] = self._in_flight.get(pool, 0) + 1
        ticket = AdmissionTicket(pool, max(0.0, now - enqueued), tenant, requested, res.tokens, now, res, self)
        self.metrics.admitted.labels(tenant.tier, str(ticket.spilled).lower()).inc()
        self.metrics.queue_wait.labels(tenant.tier).observe(ticket.queued_seconds)
        self.metrics.in_flight.labels(pool.model, pool.mode.value).set(self._in_flight[pool])
        for observe in self.wait_observers:
            observe(tenant, ticket.queued_seconds)
        return ticket

    def _release(self, ticket: AdmissionTicket, usage: Usage) -> None:
        now = self._clock()
        pool = ticket.pool
        self._in_flight[pool] = max(0, self._in_flight.get(pool, 0) - 1)
        self.metrics.in_flight.labels(pool.model, pool.mode.value).set(self._in_flight[pool])
        held = now - ticket.admitted_at
        a = self.config.queue.service_time_ewma_alpha
        prev = self._service_time.get(pool)
        self._service_time[pool] = held if prev is None else (1 - a) * prev + a * held
        used = usage.prompt_tokens + usage.completion_tokens
        if self.config.throttling:
            if ticket.reservation is not None:
                self.limits.settle(ticket.reservation, used, now, self._wall())
            self._queue.settle(ticket.tenant.id, ticket.tenant.priority, used - ticket.estimate)
        self._dispatch()

    # --- introspection and lifecycle -------------------------------------------------------------
    def queue_length(self) -> int:
        return len(self._queue)

    def in_flight(self, pool: PoolKey) -> int:
        return self._in_flight.get(pool, 0)

    def entry(self, tenant_id: str) -> TenantEntry | None:
        return self.directory.entry(tenant_id)

    def poke(self) -> None:
        """Capacity may have grown (endpoints appeared): start waiters that now fit."""
        self._dispatch()

    # --- tenants-file reload and owned tasks ------------------------------------------------------
    def reload_tenants(self) -> bool:
        """Re-read the tenants file now (tenants_reload.TenantsFileReload.reload)."""
        return self.tenants_file.reload()

    async def _poll_capacity(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.queue_length():
                self.poke()

    async def start(self) -> None:
        if getattr(self, "_tasks", None):
            return
        self.tenants_file.mark_loaded()
        self._tasks = []
        if self.tenants_file.path is not None and self.config.tenants_reload_seconds > 0:
            self._tasks.append(
                asyncio.create_task(self.tenants_file.watch(self.config.tenants_reload_seconds), name="tenants-reload")
            )
        if self.config.queue.dispatch_interval_seconds > 0:
            self._tasks.append(
                asyncio.create_task(
                    self._poll_capacity(self.config.queue.dispatch_interval_seconds), name="admission-capacity-poll"
                )
            )

    async def stop(self) -> None:
        tasks, self._tasks = getattr(self, "_tasks", []), []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
