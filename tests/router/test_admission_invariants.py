"""Invariants under random traffic: capacity never exceeded, nothing leaks, per-tenant FIFO, tier order."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supernode.api.models import Mode
from supernode.router.admission import AdmissionConfig, build_gatekeeper
from supernode.router.admission.fairqueue import FairQueue, Waiter
from supernode.router.admission.testing import StaticCapacity, ctx, tenant, tenants_file
from supernode.router.contracts import PoolKey, Usage
from supernode.router.errors import AdmissionRejected

A = PoolKey("pro", Mode.THINK_MAX)
B = PoolKey("pro", Mode.THINK_HIGH)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 2), st.integers(1, 5000)), max_size=40))
def test_fair_queue_serves_everyone_once_in_tier_order_and_fifo_per_tenant(items: list[tuple[str, int, int]]) -> None:
    q = FairQueue()
    waiters = [Waiter(t, prio, cost, (A,), 0.0, handle=i) for i, (t, prio, cost) in enumerate(items)]
    for w in waiters:
        q.add(w)
    served = []
    while (got := q.pop_grantable(lambda p: True)) is not None:
        served.append(got[0])
    assert sorted(w.handle for w in served) == list(range(len(items)))
    assert [w.priority for w in served] == sorted(w.priority for w in served)
    for t in "abcd":
        mine = [w.handle for w in served if w.tenant == t]
        for prio in range(3):
            in_tier = [w.handle for w in served if w.tenant == t and w.priority == prio]
            assert in_tier == sorted(in_tier)
        assert len(mine) == sum(1 for x in items if x[0] == t)


@pytest.mark.looptime
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_traffic_keeps_capacity_and_leaks_nothing(tmp_path: Path, seed: int, looptime: Any) -> None:
    rng = random.Random(seed)
    path = tenants_file(
        tenant("p").tier("premium").key("kp").concurrency(50),
        tenant("s").tier("standard").key("ks").rpm(600),
        tenant("f").tier("free").key("kf").no_spill(),
    ).write(tmp_path / "t.yaml")
    cap = StaticCapacity({A: 3, B: 2})
    rules = {"rules": [{"from": {"model": "pro", "mode": "think-max"}, "to": [{"model": "pro", "mode": "think-high"}]}]}
    cfg = AdmissionConfig.model_validate(
        {"tenantsFile": str(path), "queue": {"maxWaitSeconds": 8, "dispatchIntervalSeconds": 0.5}, "spillOver": rules}
    )
    gate = build_gatekeeper(cfg, cap, wall_clock=lambda: 1_780_000_000.0)
    await gate.start()
    peak = {A: 0, B: 0}
    outcomes = {"ok": 0, "rejected": 0, "cancelled": 0}

    async def client(key: str) -> None:
        c = ctx(gate.authenticate(key)).mode(Mode.THINK_MAX).model("pro").tokens(rng.randint(1, 500), 100)
        try:
            ticket = await gate.admit(c.obj(), [A])
        except AdmissionRejected:
            outcomes["rejected"] += 1
            return
        for p in peak:
            peak[p] = max(peak[p], gate.in_flight(p))
        try:
            await asyncio.sleep(rng.uniform(0.1, 3))
        finally:
            ticket.release(Usage(50, 0, 50, 0))  # as the request path does, also on disconnect
        outcomes["ok"] += 1

    tasks = []
    for _ in range(150):
        await asyncio.sleep(rng.expovariate(4))
        if rng.random() < 0.05:
            cap.caps[A] = rng.randint(1, 4)  # endpoints come and go
        task = asyncio.create_task(client(rng.choice(["kp", "ks", "kf"])))
        tasks.append(task)
        if rng.random() < 0.1:
            asyncio.get_running_loop().call_later(rng.uniform(0, 2), task.cancel)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    outcomes["cancelled"] = sum(isinstance(r, asyncio.CancelledError) for r in results)
    await gate.stop()
    assert peak[A] <= 4 and peak[B] <= 2
    assert gate.queue_length() == 0 and gate.in_flight(A) == 0 and gate.in_flight(B) == 0
    assert all(lim.in_flight == 0 for lim in gate._limiters.values())
    assert outcomes["ok"] > 0 and outcomes["rejected"] > 0 and sum(outcomes.values()) == 150
