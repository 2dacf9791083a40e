"""What admission hands a request it let in: the pool, the reservation, and the release back to the gate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from supernode.router.admission.reservations import Reservation
from supernode.router.contracts import PoolKey, Tenant, Usage


class _Gate(Protocol):
    def _release(self, ticket: AdmissionTicket, usage: Usage) -> None: ...


@dataclass(eq=False)
class AdmissionTicket:
    """Returned by ``admit``; ``release`` is idempotent and must be called exactly once per admit."""

    pool: PoolKey
    queued_seconds: float
    tenant: Tenant
    requested: PoolKey
    estimate: int
    admitted_at: float
    reservation: Reservation | None = None
    _gate: _Gate | None = field(repr=False, default=None)

    @property
    def max_tokens(self) -> int:
        """Completion tokens admission reserved: the engine is asked for no more."""
        return self.reservation.max_tokens if self.reservation else 0

    @property
    def spilled(self) -> bool:
        return self.pool != self.requested

    def release(self, usage: Usage) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._release(self, usage)
