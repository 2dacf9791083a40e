"""Per-tenant limiters (pure, clock injected): RPM/TPM token buckets, concurrency, monthly quota."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from supernode.router.admission.limits import TenantLimiter, TokenBucket, month_start, next_month_start
from supernode.router.admission.tenants import TenantSpec

JAN_31 = float(calendar.timegm((2026, 1, 31, 23, 59, 0)))


def spec(**kw: object) -> TenantSpec:
    return TenantSpec.model_validate({"id": "t", **kw})


def test_bucket_refills_at_its_rate_up_to_capacity() -> None:
    b = TokenBucket.per_minute(60, now=0.0)
    b.take(60, 0.0)
    assert b.wait_for(1, 0.0) == pytest.approx(1.0)
    assert b.wait_for(1, 0.5) == pytest.approx(0.5)
    assert b.wait_for(1, 1.0) == 0.0
    assert b.wait_for(60, 1000.0) == 0.0 and b.level == 60


def test_a_cost_above_capacity_needs_a_full_bucket_not_forever() -> None:
    b = TokenBucket.per_minute(100, now=0.0)
    b.take(50, 0.0)
    assert b.wait_for(10_000, 0.0) == pytest.approx(30.0)  # 50 missing at 100/60 per second


def test_rpm_rejects_with_retry_after() -> None:
    lim = TenantLimiter.create(spec(rpm=2), now=0.0, wall=JAN_31)
    for _ in range(2):
        assert lim.check(1, 0.0, JAN_31).ok
        lim.charge(1, 0.0)
        lim.settle(1, 1, 0.0, JAN_31)
    v = lim.check(1, 0.0, JAN_31)
    assert (v.limit, v.retry_after) == ("rpm", pytest.approx(30.0))
    assert lim.check(1, 30.0, JAN_31).ok


def test_tpm_charges_the_estimate_and_settles_to_real_usage() -> None:
    lim = TenantLimiter.create(spec(tpm=1000), now=0.0, wall=JAN_31)
    lim.charge(900, 0.0)
    assert lim.check(200, 0.0, JAN_31).limit == "tpm"
    lim.settle(900, 100, 0.0, JAN_31)  # used far less than estimated: refunded
    assert lim.check(200, 0.0, JAN_31).ok


def test_tpm_usage_above_the_estimate_becomes_debt() -> None:
    lim = TenantLimiter.create(spec(tpm=600), now=0.0, wall=JAN_31)
    lim.charge(100, 0.0)
    lim.settle(100, 1200, 0.0, JAN_31)  # 600 of debt at 10 tokens/s
    v = lim.check(10, 0.0, JAN_31)
    assert v.limit == "tpm" and v.retry_after == pytest.approx(61.0)


def test_max_concurrent_counts_requests_in_flight() -> None:
    lim = TenantLimiter.create(spec(maxConcurrent=2), now=0.0, wall=JAN_31)
    lim.charge(1, 0.0)
    lim.charge(1, 0.0)
    v = lim.check(1, 0.0, JAN_31)
    assert v.limit == "max_concurrent" and "limit 2" in v.message
    lim.settle(1, 1, 0.0, JAN_31)
    assert lim.check(1, 0.0, JAN_31).ok


def test_monthly_quota_starts_from_ledger_usage_and_resets_next_month() -> None:
    lim = TenantLimiter.create(spec(monthlyTokenQuota=1000), now=0.0, wall=JAN_31, used_tokens=990)
    assert lim.check(50, 0.0, JAN_31).ok
    lim.charge(50, 0.0)
    lim.settle(50, 20, 0.0, JAN_31)
    v = lim.check(1, 0.0, JAN_31)
    assert v.limit == "monthly_token_quota" and v.retry_after == pytest.approx(60.0)
    feb = JAN_31 + 120
    assert lim.check(1, 0.0, feb).ok and lim.used_tokens == 0


def test_limits_follow_a_reload_keeping_state() -> None:
    lim = TenantLimiter.create(spec(rpm=60), now=0.0, wall=JAN_31)
    lim.charge(1, 0.0)
    lim.update(spec(rpm=1), 0.0)
    assert lim.check(1, 0.0, JAN_31).limit == "rpm"
    lim.update(spec(), 0.0)
    assert lim.rpm is None and lim.check(1, 0.0, JAN_31).ok


def test_month_boundaries_are_utc_calendar_months() -> None:
    assert month_start(JAN_31) == calendar.timegm((2026, 1, 1, 0, 0, 0))
    assert next_month_start(JAN_31) == calendar.timegm((2026, 2, 1, 0, 0, 0))
    dec = calendar.timegm((2025, 12, 15, 0, 0, 0))
    assert next_month_start(dec) == calendar.timegm((2026, 1, 1, 0, 0, 0))


def test_config_accepts_snake_and_camel_case_and_resolves_relative_paths(tmp_path: Path) -> None:
    from supernode.router.admission import AdmissionConfig
    from supernode.router.metering import MeteringConfig

    a = AdmissionConfig.model_validate({"tenants_file": "t.yaml", "queue": {"max_wait_seconds": 5}})
    b = AdmissionConfig.model_validate({"tenantsFile": "t.yaml", "queue": {"maxWaitSeconds": 5}})
    assert a == b and a.with_base_dir(tmp_path).tenants_file == tmp_path / "t.yaml"
    m = MeteringConfig.model_validate({"ledger_path": "u.db"}).with_base_dir(tmp_path)
    assert m.ledger_path == tmp_path / "u.db"
    with pytest.raises(ValueError, match=r"max_wait_seconds|maxWaitSeconds"):
        AdmissionConfig.model_validate({"anonymous": True, "queue": {"max_wait_seconds": 0}})
    with pytest.raises(ValueError, match="two rules"):
        rule = {"from": {"model": "m", "mode": "think-max"}, "to": [{"model": "m", "mode": "think-high"}]}
        AdmissionConfig.model_validate({"anonymous": True, "spill_over": {"rules": [rule, rule]}})


def test_capacity_helper() -> None:
    from supernode.router.admission.config import CapacityConfig

    c = CapacityConfig.model_validate({"per_group_concurrency": 8, "per_model_concurrency": {"pro": 4}})
    assert c.pool_capacity("flash", 3) == 24 and c.pool_capacity("pro", 3) == 12
    assert c.pool_capacity("flash", 3, engine_max=16) == 48
    assert c.pool_capacity("flash", 3, capacity_limited=True) == 12
    assert c.pool_capacity("flash", 1, capacity_limited=True) == 4 and c.pool_capacity("flash", 0) == 0


def test_a_clock_that_jumps_back_does_not_freeze_the_bucket() -> None:
    b = TokenBucket.per_minute(60, now=1000.0)  # built on another clock
    b.take(60, 0.0)
    assert b.wait_for(1, 0.5) == pytest.approx(0.5)
