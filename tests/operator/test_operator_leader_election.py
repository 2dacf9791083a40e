"""Leader election: the pure decision table, the Lease we write, and two electors racing on the test API."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from k8s_emulator import K8sEmulator

from supernode.operator.kube import Access, KubeClient
from supernode.operator.leader import (
    Action,
    ElectionConfig,
    LeaderElector,
    decide,
    lease_spec,
    record_key,
    released_spec,
)
from supernode.operator.metrics import OperatorMetrics

WALL = datetime.datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=datetime.UTC)


def lease(holder: str | None, duration: int = 15, renew: str = "2026-11-29T10:00:00.000000Z",
          transitions: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": "l", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": renew,
                     "acquireTime": "2026-11-29T09:00:00.000000Z", "leaseTransitions": transitions}}


@pytest.mark.parametrize(("current", "now", "observed_at", "expected"), [
    (None, 0.0, 0.0, Action.CREATE),  # no Lease yet
    (lease("me"), 100.0, 0.0, Action.RENEW),  # ours, even if we were slow: renew
    (lease("other"), 14.9, 0.0, Action.WAIT),  # live: seen renewed 14.9 s ago, duration 15
    (lease("other"), 15.0, 0.0, Action.ACQUIRE),  # expired on our clock
    (lease("other", duration=30), 20.0, 0.0, Action.WAIT),  # the Lease's own duration wins over the default
    (lease("other", duration=30), 30.0, 0.0, Action.ACQUIRE),
    (lease(None), 0.0, 0.0, Action.ACQUIRE),  # released: take it at once
    (lease(""), 0.0, 0.0, Action.ACQUIRE),
    ({"metadata": {}, "spec": {"holderIdentity": "other"}}, 9.0, 0.0, Action.WAIT),  # no duration: the default 10
    ({"metadata": {}, "spec": {"holderIdentity": "other"}}, 10.0, 0.0, Action.ACQUIRE),
])
def test_decide(current: dict[str, Any] | None, now: float, observed_at: float, expected: Action) -> None:
    assert decide(current, "me", now, observed_at, default_duration=10.0) is expected


def test_expiry_clock_restarts_when_the_holder_renews() -> None:
    assert record_key(lease("a", renew="t1")) != record_key(lease("a", renew="t2"))
    assert record_key(lease("a", renew="t1")) == record_key(lease("a", renew="t1", duration=99))


def test_lease_spec_on_takeover_renewal_and_release() -> None:
    taken = lease_spec(lease("other", transitions=3), "me", 15.0, WALL)
    assert taken == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-11-29T10:00:00.123456Z",
                     "renewTime": "2026-11-29T10:00:00.123456Z", "leaseTransitions": 4}
    renewed = lease_spec(lease("me", transitions=4), "me", 15.0, WALL)
    assert renewed["acquireTime"] == "2026-11-29T09:00:00.000000Z" and renewed["leaseTransitions"] == 4
    assert lease_spec(None, "me", 15.0, WALL)["leaseTransitions"] == 0  # first holder ever
    released = released_spec(lease("me"))
    assert released["holderIdentity"] is None and released["leaseDurationSeconds"] == 1


@pytest.mark.parametrize(("duration", "deadline", "retry"), [(10, 10, 2), (15, 10, 10), (15, 10, 0), (5, 10, 2)])
def test_config_rejects_inconsistent_timings(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry-period < renew-deadline < lease-duration"):
        ElectionConfig("l", "ns", "me", lease_duration=duration, renew_deadline=deadline, retry_period=retry)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_two_electors_one_leader_then_takeover_after_expiry(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    clock = Clock()
    cfg: dict[str, Any] = {"name": "op", "namespace": "sys", "lease_duration": 3.0, "renew_deadline": 2.0,
                           "retry_period": 0.5}
    metrics = {n: OperatorMetrics() for n in "ab"}
    a = LeaderElector(KubeClient(Access(url)), ElectionConfig(identity="a", **cfg), clock=clock,
                      on_change=metrics["a"].set_leader)
    b = LeaderElector(KubeClient(Access(url)), ElectionConfig(identity="b", **cfg), clock=clock,
                      on_change=metrics["b"].set_leader)

    def gauges(e: LeaderElector) -> tuple[float | None, float | None]:
        reg = metrics[e.config.identity].registry
        return (reg.get_sample_value("supernode_operator_leader"),
                reg.get_sample_value("supernode_operator_leader_transitions_total"))

    try:
        first = await asyncio.gather(a.try_once(), b.try_once())
        assert sorted(first) == [False, True], "exactly one creates the Lease"
        leader, standby = (a, b) if first[0] else (b, a)
        assert gauges(leader) == (1.0, 1.0) and gauges(standby) == (0.0, 0.0)
        assert emu.get("leases", "sys", "op", "coordination.k8s.io")["spec"]["holderIdentity"] == leader.config.identity
        clock.t = 2.0
        assert await leader.try_once() and not await standby.try_once()  # renewed: standby sees a new record
        clock.t = 4.9
        assert not await standby.try_once()  # 2.9 s since it saw the renewal
        clock.t = 5.0
        assert await standby.try_once(), "expired on the standby's clock: it takes over"
        spec = emu.get("leases", "sys", "op", "coordination.k8s.io")["spec"]
        assert spec["holderIdentity"] == standby.config.identity and spec["leaseTransitions"] == 1
        assert not await leader.try_once() and not leader.is_leader, "the old leader sees it lost"
        assert gauges(leader) == (0.0, 2.0) and gauges(standby) == (1.0, 1.0)
        await standby.release()
        assert gauges(standby) == (0.0, 2.0)
        assert emu.get("leases", "sys", "op", "coordination.k8s.io")["spec"]["holderIdentity"] is None
        assert await leader.try_once(), "a released Lease is free at once"
    finally:
        await a.client.close()
        await b.client.close()


async def test_racing_takeover_has_one_winner(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    cfg: dict[str, Any] = {"name": "op", "namespace": "sys", "lease_duration": 3.0, "renew_deadline": 2.0,
                           "retry_period": 0.5}
    owner = LeaderElector(KubeClient(Access(url)), ElectionConfig(identity="gone", **cfg))
    assert await owner.try_once()
    clock = Clock()
    racers = [LeaderElector(KubeClient(Access(url)), ElectionConfig(identity=f"r{i}", **cfg), clock=clock)
              for i in range(4)]
    try:
        assert not any(await asyncio.gather(*(r.try_once() for r in racers)))  # all observe the live Lease
        clock.t = 3.0
        won = await asyncio.gather(*(r.try_once() for r in racers))
        assert sum(won) == 1, won  # PUT with resourceVersion: the others get 409
    finally:
        for e in (owner, *racers):
            await e.client.close()


async def test_leader_gives_up_when_it_cannot_renew(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    elector = LeaderElector(KubeClient(Access(url)), ElectionConfig(
        "op", "sys", "me", lease_duration=1.0, renew_deadline=0.4, retry_period=0.1))
    try:
        assert await elector.try_once()
        await elector.client.close()
        elector.client = KubeClient(Access("http://127.0.0.1:9"))  # API unreachable from now on
        lost = await asyncio.wait_for(elector.hold(asyncio.Event()), 3)
        assert lost is False and not elector.is_leader
    finally:
        await elector.client.close()


async def test_run_elected_stops_the_operator_and_exits_1_when_the_lease_is_taken(
        k8s: tuple[K8sEmulator, str]) -> None:
    from supernode.operator.elected import EXIT_LOST, run_elected

    emu, url = k8s
    elector = LeaderElector(KubeClient(Access(url)), ElectionConfig(
        "op", "sys", "me", lease_duration=1.0, renew_deadline=0.5, retry_period=0.1))
    seen: list[str] = []

    async def operate(stop: asyncio.Event) -> None:
        seen.append("started")
        await emu.patch_object("leases", "sys", "op", {"spec": {"holderIdentity": "usurper"}},
                               group="coordination.k8s.io")
        await stop.wait()
        seen.append("stopped")

    assert await asyncio.wait_for(run_elected(elector, operate), 5) == EXIT_LOST
    assert seen == ["started", "stopped"], "the operator runs only as leader and is stopped on loss"
    assert emu.get("leases", "sys", "op", "coordination.k8s.io")["spec"]["holderIdentity"] == "usurper"
