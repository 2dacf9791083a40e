"""LimitStore (reserve → settle | refund): requests in flight count against the quota and TPM, and a
reservation caps the completion tokens the engine is asked for."""

from __future__ import annotations

from supernode.router.admission.limits import Verdict
from supernode.router.admission.reservations import LocalLimitStore, Reservation
from supernode.router.admission.tenants import TenantSpec

WALL = 1_780_000_000.0


def store(**limits: int) -> LocalLimitStore:
    s = LocalLimitStore()
    s.sync([TenantSpec.model_validate({"id": "t", **limits})], 0.0, WALL, {"t": 0})
    return s


def test_the_quota_counts_reservations_in_flight_and_caps_max_tokens() -> None:
    s = store(monthlyTokenQuota=50)
    first = s.reserve_now("t", 2, 4096, 0.0, WALL)
    assert isinstance(first, Reservation) and (first.tokens, first.max_tokens) == (50, 48)
    second = s.reserve_now("t", 2, 4096, 0.0, WALL)
    assert isinstance(second, Verdict) and second.limit == "monthly_token_quota" and "reserved" in second.message
    s.settle(first, 12, 0.0, WALL)  # used far less than reserved: the rest is free again
    third = s.reserve_now("t", 2, 4096, 0.0, WALL)
    assert isinstance(third, Reservation) and third.max_tokens == 50 - 12 - 2
    s.refund(third, 0.0, WALL)
    assert s.usage("t") == {"in_flight": 0, "month_tokens": 12, "reserved_tokens": 0}


def test_fifty_reservations_against_fifty_tokens_admit_only_what_fits() -> None:
    s = store(monthlyTokenQuota=50)
    granted = [r for r in (s.reserve_now("t", 1, 1, 0.0, WALL) for _ in range(50)) if isinstance(r, Reservation)]
    assert sum(r.tokens for r in granted) <= 50 and len(granted) == 25


def test_tpm_counts_reservations_in_flight() -> None:
    s = store(tpm=100)
    assert isinstance(s.reserve_now("t", 10, 40, 0.0, WALL), Reservation)
    assert isinstance(s.reserve_now("t", 10, 40, 0.0, WALL), Reservation)
    over = s.reserve_now("t", 10, 40, 0.0, WALL)
    assert isinstance(over, Verdict) and over.limit == "tpm"


def test_a_tenant_without_limits_reserves_nothing() -> None:
    r = LocalLimitStore().reserve_now("nobody", 5, 10, 0.0, WALL)
    assert isinstance(r, Reservation) and not r.limited and r.max_tokens == 10
