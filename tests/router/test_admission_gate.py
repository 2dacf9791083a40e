"""The gatekeeper end to end (looptime): capacity, fair priority queue, deadlines, spill-over, limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from supernode.api.models import Mode
from supernode.router.admission import AdmissionConfig, Gatekeeper, build_gatekeeper
from supernode.router.admission.testing import StaticCapacity, ctx, tenant, tenants_file
from supernode.router.contracts import PoolKey, Tenant, Usage
from supernode.router.errors import AdmissionRejected, ForbiddenError, NoCapacity

pytestmark = pytest.mark.looptime

PRO_MAX = PoolKey("deepseek-v4-pro", Mode.THINK_MAX)
PRO_HIGH = PoolKey("deepseek-v4-pro", Mode.THINK_HIGH)
FLASH_HIGH = PoolKey("deepseek-v4-flash", Mode.THINK_HIGH)
FLASH = PoolKey("deepseek-v4-flash", Mode.NON_THINK)


def config(**kw: Any) -> AdmissionConfig:
    base: dict[str, Any] = {"queue": {"maxWaitSeconds": 30, "dispatchIntervalSeconds": 0}}
    for k, v in kw.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return AdmissionConfig.model_validate(base)


def gate(
    tmp_path: Path, caps: dict[PoolKey, int], *tenants: Any, usage: dict[str, int] | None = None, **kw: Any
) -> tuple[Gatekeeper, StaticCapacity]:
    cap = StaticCapacity(caps)
    path = tenants_file(*tenants).write(tmp_path / "tenants.yaml") if tenants else None
    g = build_gatekeeper(
        config(tenantsFile=path, **kw) if path else config(anonymous=True, **kw),
        cap,
        usage_totals=(lambda since: usage or {}),
        wall_clock=lambda: 1_780_000_000.0,
    )
    return g, cap


def who(g: Gatekeeper, key: str) -> Tenant:
    return g.authenticate(key)


async def test_admits_up_to_capacity_then_queues_until_release(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(tmp_path, {FLASH: 2})
    t1 = await g.admit(ctx().obj(), [FLASH])
    await g.admit(ctx().obj(), [FLASH])
    third = asyncio.create_task(g.admit(ctx().obj(), [FLASH]))
    await asyncio.sleep(5)
    assert not third.done() and g.queue_length() == 1 and g.in_flight(FLASH) == 2
    t1.release(Usage(10, 0, 10, 0))
    t1.release(Usage(10, 0, 10, 0))  # idempotent
    ticket = await third
    assert ticket.pool == FLASH and ticket.queued_seconds == pytest.approx(5)
    assert g.in_flight(FLASH) == 2 and g.queue_length() == 0


async def test_a_queued_request_gets_429_at_its_deadline(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(tmp_path, {FLASH: 1}, tenant("a").key("ka").concurrency(5))
    a = who(g, "ka")
    await g.admit(ctx(a).obj(), [FLASH])
    with pytest.raises(AdmissionRejected) as exc:
        await g.admit(ctx(a).obj(), [FLASH])
    assert looptime == 30
    assert exc.value.status == 429 and exc.value.limit == "queue_timeout"
    assert exc.value.headers["x-ratelimit-limit-name"] == "queue_timeout" and exc.value.retry_after >= 1
    assert g.queue_length() == 0 and g._limiters["a"].in_flight == 1  # the waiter's slot was refunded


async def test_rejects_at_once_when_the_expected_wait_exceeds_the_bound(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(tmp_path, {FLASH: 1})
    first = await g.admit(ctx().obj(), [FLASH])
    await asyncio.sleep(10)
    first.release(Usage())  # observed service time: 10 s per request on one slot
    held = await g.admit(ctx().obj(), [FLASH])
    waiters = [asyncio.create_task(g.admit(ctx().obj(), [FLASH])) for _ in range(3)]
    await asyncio.sleep(0)
    assert g.queue_length() == 3  # the 3rd expects (2 ahead + itself) x 10 s = 30 s: within the bound
    start = looptime
    with pytest.raises(AdmissionRejected) as exc:
        await g.admit(ctx().obj(), [FLASH])  # 40 s expected > 30 s
    assert exc.value.limit == "queue_wait" and exc.value.retry_after == pytest.approx(10)
    assert looptime == start  # rejected immediately, not after waiting
    held.release(Usage())
    for w_ in waiters:
        w_.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_cancelled_waiter_leaves_the_queue(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(tmp_path, {FLASH: 1}, tenant("a").key("ka").concurrency(3))
    a = who(g, "ka")
    held = await g.admit(ctx(a).obj(), [FLASH])
    gone = asyncio.create_task(g.admit(ctx(a).obj(), [FLASH]))
    stays = asyncio.create_task(g.admit(ctx(a).obj(), [FLASH]))
    await asyncio.sleep(1)
    assert g.queue_length() == 2 and g._limiters["a"].in_flight == 3
    gone.cancel()  # client disconnected
    await asyncio.sleep(0)
    assert g.queue_length() == 1 and g._limiters["a"].in_flight == 2
    held.release(Usage())
    assert (await stays).pool == FLASH and g.in_flight(FLASH) == 1


async def test_spills_think_max_to_think_high_when_saturated(tmp_path: Path) -> None:
    rules = {
        "rules": [
            {
                "from": {"model": PRO_MAX.model, "mode": "think-max"},
                "to": [{"model": PRO_HIGH.model, "mode": "think-high"}],
            }
        ]
    }
    g, _ = gate(tmp_path, {PRO_MAX: 1, PRO_HIGH: 1}, spillOver=rules)
    c = ctx().model(PRO_MAX.model).mode(Mode.THINK_MAX)
    first = await g.admit(c.obj(), [PRO_MAX])
    second = await g.admit(c.obj(), [PRO_MAX])
    assert (first.pool, first.spilled) == (PRO_MAX, False)
    assert (second.pool, second.spilled) == (PRO_HIGH, True)
    assert (
        g.metrics.registry.get_sample_value(
            "supernode_router_admission_admitted_total", {"tier": "standard", "spilled": "true"}
        )
        == 1
    )


async def test_spill_over_chains_and_respects_tenant_opt_out_and_overrides(tmp_path: Path, looptime: Any) -> None:
    rules = {
        "rules": [
            {
                "from": {"model": PRO_MAX.model, "mode": "think-max"},
                "to": [{"model": PRO_HIGH.model, "mode": "think-high"}],
            },
            {
                "from": {"model": PRO_HIGH.model, "mode": "think-high"},
                "to": [{"model": FLASH_HIGH.model, "mode": "think-high"}],
            },
        ]
    }
    own = [{"from": {"model": PRO_MAX.model, "mode": "think-max"}, "to": [{"model": FLASH.model, "mode": "non-think"}]}]
    g, _ = gate(
        tmp_path,
        {PRO_MAX: 1, PRO_HIGH: 1, FLASH_HIGH: 1, FLASH: 1},
        tenant("strict").key("ks").no_spill(),
        tenant("own").key("ko").set(spillOverRules=own),
        spillOver=rules,
    )
    assert g.candidates(who(g, "ks"), [PRO_MAX]) == (PRO_MAX,)
    assert g.candidates(who(g, "ko"), [PRO_MAX]) == (PRO_MAX, FLASH)
    anon_chain = g.candidates(Tenant("x"), [PRO_MAX])
    assert anon_chain == (PRO_MAX, PRO_HIGH, FLASH_HIGH)
    c = ctx(who(g, "ks")).model(PRO_MAX.model).mode(Mode.THINK_MAX)
    await g.admit(c.obj(), [PRO_MAX])
    queued = asyncio.create_task(g.admit(c.obj(), [PRO_MAX]))
    await asyncio.sleep(1)
    assert not queued.done()  # no spill-over for this tenant: it waits
    queued.cancel()


async def test_no_capacity_and_forbidden(tmp_path: Path) -> None:
    g, _ = gate(
        tmp_path, {FLASH: 1}, tenant("b").key("kb").set(allowedModels=[FLASH.model], allowedModes=["non-think"])
    )
    b = who(g, "kb")
    with pytest.raises(NoCapacity) as no_cap:
        await g.admit(ctx().mode(Mode.THINK_HIGH).obj(), [FLASH_HIGH])  # no ready endpoint: capacity 0
    assert no_cap.value.status == 503
    with pytest.raises(ForbiddenError) as exc:
        await g.admit(ctx(b).model(PRO_HIGH.model).mode(Mode.THINK_HIGH).obj(), [PRO_HIGH])
    assert exc.value.status == 403
    with pytest.raises(ForbiddenError):
        await g.admit(ctx(b).mode(Mode.THINK_HIGH).obj(), [FLASH_HIGH])
    assert (await g.admit(ctx(b).obj(), [FLASH])).pool == FLASH


async def test_a_mode_limited_tenant_may_not_send_token_id_prompts(tmp_path: Path) -> None:
    # Ids could carry <think> or turn markers that text never tokenizes to (docs/security.md).
    g, _ = gate(tmp_path, {FLASH: 2}, tenant("b").key("kb").set(allowedModes=["non-think"]), tenant("a").key("ka"))
    with pytest.raises(ForbiddenError, match="token ids"):
        await g.admit(ctx(who(g, "kb")).token_ids().obj(), [FLASH])
    assert (await g.admit(ctx(who(g, "kb")).obj(), [FLASH])).pool == FLASH  # text prompts still served
    assert (await g.admit(ctx(who(g, "ka")).token_ids().obj(), [FLASH])).pool == FLASH  # unrestricted tenant


async def test_better_tier_is_served_first_from_the_queue(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(tmp_path, {FLASH: 1}, tenant("p").tier("premium").key("kp"), tenant("f").tier("free").key("kf"))
    held = await g.admit(ctx().obj(), [FLASH])
    free = asyncio.create_task(g.admit(ctx(who(g, "kf")).obj(), [FLASH]))
    await asyncio.sleep(1)
    prem = asyncio.create_task(g.admit(ctx(who(g, "kp")).obj(), [FLASH]))
    await asyncio.sleep(1)
    held.release(Usage())
    await asyncio.sleep(0.01)
    assert prem.done() and not free.done()
    prem.result().release(Usage())
    assert (await free).queued_seconds == pytest.approx(2.01)


async def test_a_flooding_tenant_does_not_starve_another(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(tmp_path, {FLASH: 2}, tenant("flood").key("kf"), tenant("calm").key("kc"))
    flood, calm = who(g, "kf"), who(g, "kc")
    order: list[str] = []

    async def one(t: Tenant) -> None:
        ticket = await g.admit(ctx(t).tokens(100, 100).obj(), [FLASH])
        order.append(t.id)
        await asyncio.sleep(1)
        ticket.release(Usage(100, 0, 100, 0))

    floods = [asyncio.create_task(one(flood)) for _ in range(20)]
    await asyncio.sleep(0.5)
    calms = [asyncio.create_task(one(calm)) for _ in range(3)]
    await asyncio.gather(*floods, *calms)
    # the calm tenant's three requests are served within the next few slots, not after all 20 floods
    assert max(i for i, t in enumerate(order) if t == "calm") <= 8


async def test_waiters_start_when_capacity_grows(tmp_path: Path, looptime: Any) -> None:
    g, cap = gate(tmp_path, {FLASH: 1}, queue={"dispatchIntervalSeconds": 0.5})
    await g.start()
    try:
        await g.admit(ctx().obj(), [FLASH])
        waiting = asyncio.create_task(g.admit(ctx().obj(), [FLASH]))
        await asyncio.sleep(3)
        assert not waiting.done()
        cap.caps[FLASH] = 2  # a replica group became ready
        await asyncio.sleep(1)
        assert waiting.done() and 3.0 <= waiting.result().queued_seconds <= 3.5  # the next poll tick
    finally:
        await g.stop()


async def test_limits_reject_with_retry_after_and_the_limit_named(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(
        tmp_path, {FLASH: 10}, tenant("r").key("kr").rpm(2), tenant("q").key("kq").quota(1000), usage={"q": 1000}
    )
    r = who(g, "kr")
    for _ in range(2):
        (await g.admit(ctx(r).obj(), [FLASH])).release(Usage(5, 0, 5, 0))
    with pytest.raises(AdmissionRejected) as exc:
        await g.admit(ctx(r).obj(), [FLASH])
    assert exc.value.limit == "rpm" and exc.value.retry_after == pytest.approx(30)
    with pytest.raises(AdmissionRejected) as exc:
        await g.admit(ctx(who(g, "kq")).obj(), [FLASH])  # the ledger says the month's quota is used up
    assert exc.value.limit == "monthly_token_quota"


async def test_queue_full_is_429(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(tmp_path, {FLASH: 1}, queue={"maxQueueLength": 2})
    await g.admit(ctx().obj(), [FLASH])
    waiters = [asyncio.create_task(g.admit(ctx().obj(), [FLASH])) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(AdmissionRejected) as exc:
        await g.admit(ctx().obj(), [FLASH])
    assert exc.value.limit == "queue_full"
    for w_ in waiters:
        w_.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert g.queue_length() == 0


async def test_throttling_off_admits_everything_at_once(tmp_path: Path, looptime: Any) -> None:
    g, _ = gate(tmp_path, {FLASH: 1}, tenant("r").key("kr").rpm(1), throttling=False)
    tickets = [await g.admit(ctx(who(g, "kr")).obj(), [FLASH]) for _ in range(5)]
    assert looptime == 0 and g.in_flight(FLASH) == 5 and g.queue_length() == 0
    for t in tickets:
        t.release(Usage())
    assert g.in_flight(FLASH) == 0


async def test_wait_observers_and_tenant_listing(tmp_path: Path) -> None:
    g, _ = gate(tmp_path, {FLASH: 1}, tenant("a").key("ka").quota(100), usage={"a": 40})
    seen: list[tuple[str, float]] = []
    g.wait_observers.append(lambda t, s: seen.append((t.id, s)))
    ticket = await g.admit(ctx(who(g, "ka")).obj(), [FLASH])
    assert seen == [("a", 0.0)]
    [listed] = g.tenants()
    assert listed["usage"] == {"in_flight": 1, "month_tokens": 40, "reserved_tokens": 20}
    assert "sha256" not in repr(listed)
    ticket.release(Usage(5, 0, 5, 0))
    assert g.tenants()[0]["usage"]["month_tokens"] == 50
