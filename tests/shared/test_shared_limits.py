"""Tenant limits held in the real Redis, shared by several gatekeepers (replicas) in one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from shared_services import REDIS_HOST, REDIS_PORT, REDIS_URL
from tcp_proxy import TcpProxy

from supernode.api.models import Mode
from supernode.router.admission import AdmissionConfig, build_gatekeeper
from supernode.router.admission.testing import StaticCapacity, TenantBuilder, ctx, tenant, tenants_file
from supernode.router.contracts import PoolKey, Usage
from supernode.router.errors import AdmissionRejected, RouterError, StateUnavailable
from supernode.router.shared.build import shared_parts
from supernode.router.shared.config import RedisState
from supernode.router.shared.gatekeeper import SharedGatekeeper
from supernode.router.shared.replicas import share
from supernode.router.shared.store import outage_spec

FLASH = PoolKey("deepseek-v4-flash", Mode.NON_THINK)
Fleet = Callable[..., Any]


@pytest.fixture
async def fleet(redis_prefix: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    gates: list[SharedGatekeeper] = []

    async def make(n: int, *tenants: TenantBuilder, url: str = REDIS_URL, cap: int = 100, ttl: float = 30,
                   usage: dict[str, int] | None = None, **state: Any) -> list[SharedGatekeeper]:
        path = tenants_file(*tenants).write(tmp_path / "tenants.yaml")
        cfg = AdmissionConfig.model_validate({"tenantsFile": str(path),
                                              "queue": {"maxWaitSeconds": 2, "dispatchIntervalSeconds": 0}})
        st = RedisState.model_validate({"type": "redis", "url": url, "keyPrefix": redis_prefix,
                                        "leaseTtlSeconds": ttl, "heartbeatSeconds": 0.2, **state})
        out = []
        for i in range(n):
            client = aioredis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3)
            factory, extra = shared_parts(st, StaticCapacity({FLASH: cap}), CollectorRegistry(), client=client,
                                          replica=f"r{len(gates) + i}")
            g = build_gatekeeper(cfg, extra.pop("capacity"), usage_totals=lambda since: usage or {},
                                 factory=factory, **extra)
            assert isinstance(g, SharedGatekeeper)
            await g.start()
            out.append(g)
        gates.extend(out)
        for g in out:
            await g.tick()  # everyone sees everyone
        return out

    yield make
    for g in gates:
        await g.stop()


async def admit_all(gates: list[SharedGatekeeper], key: str, n: int, *, prompt: int = 1, max_tokens: int = 1
                    ) -> tuple[list[Any], list[RouterError]]:
    ok, rejected = [], []
    for i in range(n):
        g = gates[i % len(gates)]  # round robin over the replicas
        try:
            ok.append(await g.admit(ctx(g.authenticate(key)).tokens(prompt, max_tokens).obj(), [FLASH]))
        except RouterError as e:
            rejected.append(e)
    return ok, rejected


async def test_rpm_holds_across_three_replicas(fleet: Fleet) -> None:
    gates = await fleet(3, tenant("acme").key("sk-a").rpm(10))
    ok, rejected = await admit_all(gates, "sk-a", 30)
    assert len(ok) == 10 and all(isinstance(e, AdmissionRejected) and e.limit == "rpm" for e in rejected)
    assert all(e.retry_after and e.retry_after >= 1 for e in rejected)
    for t in ok:
        t.release(Usage(1, 0, 1, 0))


async def test_concurrency_and_quota_count_reservations_fleet_wide(fleet: Fleet) -> None:
    gates = await fleet(3, tenant("c").key("sk-c").concurrency(4), tenant("q").key("sk-q").quota(50))
    ok, rejected = await admit_all(gates, "sk-c", 9)
    assert len(ok) == 4 and {e.limit for e in rejected} == {"max_concurrent"}  # type: ignore[attr-defined]
    ok[0].release(Usage(1, 0, 1, 0))
    await gates[0].store.drain()
    more, _ = await admit_all(gates[1:], "sk-c", 2)
    assert len(more) == 1
    # 50-token quota: the first reservation (10 + 100 tokens) covers it; concurrent ones are refused
    q_ok, q_rej = await admit_all(gates, "sk-q", 6, prompt=10, max_tokens=100)
    assert len(q_ok) == 1 and {e.limit for e in q_rej} == {"monthly_token_quota"}  # type: ignore[attr-defined]
    q_ok[0].release(Usage(10, 0, 20, 0))  # settled: 30 used, reservation gone
    await gates[0].store.drain()
    assert (await gates[1].store.redis.snapshot("q", gates[1]._wall()))[1:] == (0, 30)
    again, _ = await admit_all(gates[2:], "sk-q", 1, prompt=5, max_tokens=5)
    assert len(again) == 1


async def test_tpm_settles_real_usage_and_refunds_queue_exits(fleet: Fleet) -> None:
    gates = await fleet(2, tenant("t").key("sk-t").tpm(1000))
    ok, _ = await admit_all(gates, "sk-t", 1, prompt=100, max_tokens=800)
    _, rej = await admit_all(gates[1:], "sk-t", 1, prompt=100, max_tokens=800)
    assert rej and rej[0].limit == "tpm"  # type: ignore[attr-defined]
    ok[0].release(Usage(100, 0, 50, 0))  # used 150 of the 900 reserved: 750 back
    await gates[0].store.drain()
    again, _ = await admit_all(gates[1:], "sk-t", 1, prompt=100, max_tokens=700)
    assert len(again) == 1


async def test_leases_of_a_dead_replica_expire(fleet: Fleet) -> None:
    gates = await fleet(2, tenant("k").key("sk-k").concurrency(2), ttl=2)  # renewals every 0.2 s: ample margin
    dead, alive = gates
    held, _ = await admit_all([dead], "sk-k", 2)
    assert len(held) == 2
    assert (await alive.store.redis.snapshot("k", alive._wall()))[0] == 2
    for _ in range(12):  # while the owner runs, its leases are renewed past the TTL
        await dead.tick()
        await asyncio.sleep(0.2)
    _, rej = await admit_all([alive], "sk-k", 1)
    assert rej and rej[0].limit == "max_concurrent"  # type: ignore[attr-defined]
    task = dead._loop_task
    assert task is not None
    while not task.done():  # the replica dies: no more renewals (a cancel may land inside a Redis call)
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    await asyncio.sleep(2.6)
    ok, rej = await admit_all([alive], "sk-k", 2)
    expired = alive.backend.leases_expired._value.get()
    assert len(ok) == 2 and expired == 2, (rej, expired)


async def test_capacity_is_shared_out_by_heartbeats(fleet: Fleet) -> None:
    gates = await fleet(3, tenant("a").key("sk-a"), cap=7)
    assert sorted(g.replicas.count for g in gates) == [3, 3, 3]
    assert sorted(g._capacity.capacity(FLASH) for g in gates) == [2, 2, 3]
    assert [share(2, 3, r) for r in range(3)] == [1, 1, 1]  # never 0 while the pool has capacity
    await gates[2].stop()
    await gates[0].tick()
    assert gates[0].replicas.count == 2 and gates[0]._capacity.capacity(FLASH) in (3, 4)


async def test_monthly_counter_seeded_from_the_ledger(fleet: Fleet) -> None:
    gates = await fleet(1, tenant("q").key("sk-q").quota(1000), usage={"q": 990})
    ok, rej = await admit_all(gates, "sk-q", 2, prompt=5, max_tokens=10)
    assert len(ok) == 1 and rej[0].limit == "monthly_token_quota"  # type: ignore[attr-defined]


async def test_redis_outage_fail_open_and_fail_closed(fleet: Fleet) -> None:
    proxy = TcpProxy(REDIS_HOST, REDIS_PORT)
    try:
        gates = await fleet(2, tenant("open").key("sk-o").rpm(10).set(stateOutage="failOpen"),
                            tenant("closed").key("sk-c").rpm(10).set(stateOutage="failClosed"),
                            url=f"redis://127.0.0.1:{proxy.port}/0", timeoutSeconds=0.3)
        g = gates[0]
        proxy.cut()
        _, rej = await admit_all([g], "sk-c", 1)
        assert isinstance(rej[0], StateUnavailable) and rej[0].status == 503 and rej[0].retry_after
        ok, rej = await admit_all([g], "sk-o", 8)  # local limits at 1/N: 10 rpm / 2 replicas = 5
        assert len(ok) == 5 and rej[0].limit == "rpm"  # type: ignore[attr-defined]
        assert g.backend.up.labels("redis")._value.get() == 0.0
        for t in ok:
            t.release(Usage(1, 0, 1, 0))
        proxy.restore()
        await g.tick()
        assert g.backend.up.labels("redis")._value.get() == 1.0
        ok, _ = await admit_all([g], "sk-c", 1)
        assert len(ok) == 1
    finally:
        proxy.close()


def test_outage_spec_is_a_fair_share_of_what_is_left() -> None:
    from supernode.router.admission.tenants import TenantSpec

    spec = TenantSpec(id="x", rpm=10, tpm=1001, max_concurrent=1, monthly_token_quota=1000)
    got = outage_spec(spec, 3, 400)
    assert (got.rpm, got.tpm, got.max_concurrent, got.monthly_token_quota) == (4, 334, 1, 200)


async def test_fair_share_is_counted_fleet_wide(fleet: Fleet) -> None:
    gates = await fleet(2, tenant("flood").key("sk-f"), tenant("quiet").key("sk-q"), cap=1)
    a, b = gates
    # the flooder is served 5 requests of 1000 tokens on replica A
    for _ in range(5):
        t = await a.admit(ctx(a.authenticate("sk-f")).tokens(500, 500).obj(), [FLASH])
        t.release(Usage(500, 0, 500, 0))
    await a.tick()
    await b.tick()
    # on B both wait for the single slot: the quiet tenant goes first although the flooder queued first
    busy = await b.admit(ctx(b.authenticate("sk-q")).tokens(1, 1).obj(), [FLASH])
    flood = asyncio.create_task(b.admit(ctx(b.authenticate("sk-f")).tokens(1, 1).obj(), [FLASH]))
    await asyncio.sleep(0.05)
    quiet = asyncio.create_task(b.admit(ctx(b.authenticate("sk-q")).tokens(1, 1).obj(), [FLASH]))
    await asyncio.sleep(0.05)
    busy.release(Usage(1, 0, 1, 0))
    first = await asyncio.wait_for(quiet, 2)
    assert not flood.done()
    first.release(Usage(1, 0, 1, 0))
    (await asyncio.wait_for(flood, 2)).release(Usage(1, 0, 1, 0))
