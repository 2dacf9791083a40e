"""Per-tenant limits as reserve → settle | refund, behind a store-agnostic protocol.

Admission reserves a request's tokens (prompt estimate + the completion tokens it may generate)
before it runs, so requests in flight count against TPM and the monthly quota: 50 concurrent requests
against a 50-token quota cannot run 5,000 tokens. The reservation also caps the request's
``max_tokens`` at what the quota still allows, and the engine is sent that cap. When the request ends,
``settle`` replaces the reservation with the real usage; a request that never ran is ``refund``-ed.

``LocalLimitStore`` keeps the state in this process (``TenantLimiter`` per tenant). A shared store
(e.g. Redis, for several router replicas) implements the same ``LimitStore`` protocol; ``reserve``
must check and charge atomically. ``reserve`` is a coroutine because a shared store answers over the
network; the local store's check-and-charge has no await inside, so it is atomic on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from supernode.router.admission.limits import TenantLimiter, Verdict
from supernode.router.admission.tenants import TenantSpec


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``reserve`` took for one request: ``tokens`` (prompt estimate + granted completion
    tokens) and ``max_tokens`` (the completion tokens granted: the engine generates no more)."""

    tenant_id: str
    tokens: int
    max_tokens: int
    limited: bool = True  # False: the tenant has no limits here (nothing to settle)


class LimitStore(Protocol):
    def sync(self, specs: Sequence[TenantSpec], now: float, wall: float,
             used: Mapping[str, int] | None = None) -> None:
        """Apply the current tenants' limits (live reload); ``used`` seeds the monthly usage of
        tenants seen for the first time (from the ledger, so quotas survive restarts)."""
        ...

    def needs_seed(self, specs: Sequence[TenantSpec]) -> bool:
        """Whether some tenant is new here (then the caller fetches ``used`` from the ledger)."""
        ...

    async def reserve(self, tenant_id: str, prompt_tokens: int, max_tokens: int, now: float,
                      wall: float) -> Reservation | Verdict:
        """Check every limit and, when all pass, charge them in one step; else the Verdict naming
        the first limit exceeded."""
        ...

    def settle(self, r: Reservation, used_tokens: int, now: float, wall: float) -> None:
        """The request ended having used ``used_tokens`` (prompt + completion)."""
        ...

    def refund(self, r: Reservation, now: float, wall: float) -> None:
        """The request never ran (left the queue, rejected after reserving): give everything back."""
        ...

    def usage(self, tenant_id: str) -> dict[str, Any]:
        """In-flight requests, reserved and used tokens of one tenant (for the admin API)."""
        ...


class LocalLimitStore:
    """Limits held in this process: one ``TenantLimiter`` per tenant with limits."""

    def __init__(self) -> None:
        self.limiters: dict[str, TenantLimiter] = {}

    def needs_seed(self, specs: Sequence[TenantSpec]) -> bool:
        return any(s.id not in self.limiters for s in specs)

    def sync(self, specs: Sequence[TenantSpec], now: float, wall: float,
             used: Mapping[str, int] | None = None) -> None:
        used = used or {}
        for spec in specs:
            lim = self.limiters.get(spec.id)
            if lim is None:
                self.limiters[spec.id] = TenantLimiter.create(spec, now, wall, int(used.get(spec.id, 0)))
            else:
                lim.update(spec, now)
        keep = {s.id for s in specs}
        for tid in [t for t, lim in self.limiters.items() if t not in keep and lim.in_flight == 0]:
            del self.limiters[tid]

    async def reserve(self, tenant_id: str, prompt_tokens: int, max_tokens: int, now: float,
                      wall: float) -> Reservation | Verdict:
        return self.reserve_now(tenant_id, prompt_tokens, max_tokens, now, wall)

    def reserve_now(self, tenant_id: str, prompt_tokens: int, max_tokens: int, now: float,
                    wall: float) -> Reservation | Verdict:
        """``reserve`` without a coroutine (the check and the charge are one synchronous step)."""
        prompt_tokens, max_tokens = max(0, prompt_tokens), max(1, max_tokens)
        lim = self.limiters.get(tenant_id)
        if lim is None:
            return Reservation(tenant_id, prompt_tokens + max_tokens, max_tokens, limited=False)
        granted = lim.grantable(prompt_tokens, max_tokens, wall)
        if isinstance(granted, Verdict):
            return granted
        cost = prompt_tokens + granted
        verdict = lim.check(cost, now, wall)
        if not verdict.ok:
            return verdict
        lim.charge(cost, now)
        return Reservation(tenant_id, cost, granted)

    def settle(self, r: Reservation, used_tokens: int, now: float, wall: float) -> None:
        lim = self.limiters.get(r.tenant_id) if r.limited else None
        if lim is not None:
            lim.settle(r.tokens, max(0, used_tokens), now, wall)

    def refund(self, r: Reservation, now: float, wall: float) -> None:
        self.settle(r, 0, now, wall)

    def usage(self, tenant_id: str) -> dict[str, Any]:
        lim = self.limiters.get(tenant_id)
        if lim is None:
            return {}
        return {"in_flight": lim.in_flight, "month_tokens": lim.used_tokens, "reserved_tokens": lim.reserved_tokens}
