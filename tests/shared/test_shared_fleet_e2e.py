"""Three real router replicas (`supernode router-fleet`) behind one round-robin port, sharing Redis and
PostgreSQL, driven with the official SDKs: limits and quota hold across replicas, a replica killed
with -9 mid-stream leaves a complete ledger and its reservations expire, a PostgreSQL cut spools and
replays exactly once, a Redis cut applies each tenant's outage policy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis.asyncio as aioredis
import yaml
from fake_engine import Behaviour, EngineState  # type: ignore[import-not-found]
from router_stack import MODEL, Stack, ep  # type: ignore[import-not-found]
from shared_services import PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT, REDIS_URL
from tcp_proxy import TcpProxy

from supernode.router.admission.testing import tenant, tenants_file
from supernode.router.shared.redis_limits import RedisLimits

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "sk-fleet-admin"
RPM = 6
QUOTA = 400
TTL = 2.0


@dataclass
class Fleet:
    url: str
    proc: subprocess.Popen[bytes]
    state_file: Path
    engine: EngineState
    pg: TcpProxy
    redis: TcpProxy
    prefix: str

    def replicas(self) -> list[dict[str, Any]]:
        return list(json.loads(self.state_file.read_text())["replicas"])

    def oai(self, key: str, base: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{base or self.url}/v1", api_key=key, max_retries=0, timeout=30)

    async def usage_rows(self, tenant: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(f"{self.url}/admin/usage", params={"tenant": tenant, "view": "rows"},
                            headers={"authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200, r.text
        return list(r.json()["rows"])


@pytest.fixture
async def fleet(tmp_path: Path, pg_schema: str, redis_prefix: str) -> AsyncIterator[Fleet]:
    stack = Stack(tmp_path)
    engine_url = await stack.engine("e1", Behaviour(name="e1", answer_words=4))
    stack.write_endpoints([ep(engine_url, maxConcurrency=64)])
    tenants_file(
        tenant("rpm").key("sk-rpm").rpm(RPM),
        tenant("quota").key("sk-quota").quota(QUOTA),
        tenant("kill").key("sk-kill").concurrency(2),
        tenant("open").key("sk-open").rpm(1000).set(stateOutage="failOpen"),
        tenant("closed").key("sk-closed").rpm(1000).set(stateOutage="failClosed"),
    ).write(tmp_path / "tenants.yaml")
    pg, rd = TcpProxy(PG_HOST, PG_PORT), TcpProxy(REDIS_HOST, REDIS_PORT)
    config = {
        "discovery": {"type": "local", "path": str(stack.endpoints_path), "poll_interval_s": 0.1},
        "health": {"scrape_interval_s": 0},
        "admission": {"tenants_file": str(tmp_path / "tenants.yaml"), "queue": {"dispatch_interval_seconds": 0.05}},
        "metering": {"ledger": {"type": "postgres", "schema": pg_schema, "replayIntervalSeconds": 0.2,
                                "connectTimeoutSeconds": 1, "spoolPath": str(tmp_path / "spool.sqlite3")}},
        "state": {"type": "redis", "url": f"redis://127.0.0.1:{rd.port}/0", "keyPrefix": redis_prefix,
                  "leaseTtlSeconds": TTL, "heartbeatSeconds": 0.3, "timeoutSeconds": 0.5},
    }
    (tmp_path / "router.yaml").write_text(yaml.safe_dump(config))
    port = TcpProxy._listen(0).getsockname()[1]
    state_file = tmp_path / "fleet.json"
    env = {**os.environ, "SUPERNODE_ADMIN_KEY": ADMIN,
           "SUPERNODE_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:{pg.port}/test", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "supernode.cli", "router-fleet", "--config",
                             str(tmp_path / "router.yaml"), "--replicas", "3", "--port", str(port),
                             "--state-file", str(state_file), "--log-level", "warning",
                             "--shutdown-timeout", "2"], cwd=ROOT, env=env)
    f = Fleet(f"http://127.0.0.1:{port}", proc, state_file, stack.engines["e1"], pg, rd, redis_prefix)
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as c:
            while True:
                assert proc.poll() is None, "router-fleet exited"
                assert time.monotonic() < deadline, "the fleet did not come up"
                if state_file.exists():
                    ok = 0
                    for r in f.replicas():
                        with contextlib.suppress(httpx.HTTPError):
                            ok += (await c.get(f"http://127.0.0.1:{r['port']}/ready")).status_code == 200
                    if ok == 3:
                        break
                await asyncio.sleep(0.2)
        yield f
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
        pg.close()
        rd.close()
        await stack.close()


async def chat(client: openai.AsyncOpenAI, max_tokens: int = 16) -> openai.types.chat.ChatCompletion:
    return await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=max_tokens, extra_body={"thinking": {"type": "disabled"}})


async def test_three_replicas_share_limits_ledger_and_survive_faults(fleet: Fleet) -> None:
    # 1. rpm R, 3R requests round-robined over the replicas: R admitted (+ what the bucket refills meanwhile)
    client = fleet.oai("sk-rpm")
    t0 = time.monotonic()
    codes = []
    for _ in range(3 * RPM):
        try:
            await chat(client)
            codes.append(200)
        except openai.RateLimitError as e:
            assert e.response.headers.get("retry-after")
            codes.append(429)
    refill = (time.monotonic() - t0) * RPM / 60
    assert RPM <= codes.count(200) <= RPM + int(refill) + 0, (codes, refill)
    # 2. the monthly quota holds across replicas (reservations count while in flight)
    qc = fleet.oai("sk-quota")
    admitted = 0
    with pytest.raises(openai.RateLimitError, match="quota"):
        for _ in range(100):
            await chat(qc, max_tokens=40)
            admitted += 1
    rows = await fleet.usage_rows("quota")
    used = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    # admitted while settled + reserved + prompt leave room; max_tokens capped to that room: never above
    assert len(rows) == admitted and QUOTA - 60 <= used <= QUOTA, (used, admitted)
    # Anthropic SDK through the same front, same shared limits
    ac = anthropic.AsyncAnthropic(base_url=fleet.url, api_key="sk-quota", max_retries=0, timeout=30)
    with pytest.raises(anthropic.RateLimitError):  # a prompt larger than the <= 60 tokens the quota has left
        await ac.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi " * 400}])

    # 3. kill -9 of a replica mid-stream: the ledger keeps every answered request, its leases expire
    victim = fleet.replicas()[0]
    fleet.engine.behaviour.chunk_delay_s = 0.3
    kc = fleet.oai("sk-kill", base=f"http://127.0.0.1:{victim['port']}")
    stream = await kc.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=16, stream=True,
                                              extra_body={"thinking": {"type": "disabled"}})
    await stream.__anext__()
    limits = RedisLimits(aioredis.from_url(REDIS_URL), fleet.prefix, lease_ttl_s=TTL)
    assert (await limits.snapshot("kill", time.time()))[0] == 1
    os.kill(victim["pid"], signal.SIGKILL)
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        async for _ in stream:
            pass
    fleet.engine.behaviour.chunk_delay_s = 0.0
    killed_at = time.monotonic()
    while (await limits.snapshot("kill", time.time()))[0]:
        assert time.monotonic() - killed_at < TTL + 1.5, "the dead replica's lease did not expire"
        await asyncio.sleep(0.1)
    await limits.client.aclose()
    # the fleet restarts the replica, which closes the row its previous run left open as interrupted;
    # every request is in the ledger exactly once
    for _ in range(2):
        await chat(fleet.oai("sk-kill"))
    deadline = time.monotonic() + 10
    while True:
        rows = await fleet.usage_rows("kill")
        status = sorted(r["status"] for r in rows)
        if status == ["interrupted", "ok", "ok"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == ["interrupted", "ok", "ok"], rows
    killed = next(r for r in rows if r["status"] == "interrupted")
    assert killed["prompt_tokens"] > 0  # what was known: the prompt estimate (+ tokens delivered, if checkpointed)
    assert len(await fleet.usage_rows("rpm")) == codes.count(200)

    # 4. PostgreSQL cut: answers go on, rows spool; when it returns they are replayed exactly once
    fleet.pg.cut()
    oc = fleet.oai("sk-open")
    for _ in range(6):
        await chat(oc)
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{fleet.url}/admin/usage", headers={"authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_unavailable"
    fleet.pg.restore()
    deadline = time.monotonic() + 15
    while True:
        try:
            rows = await fleet.usage_rows("open")
        except AssertionError:
            rows = []
        if len(rows) >= 6 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert len(rows) == 6 and len({r["request_id"] for r in rows}) == 6

    # 5. Redis cut: failOpen tenants are served on local limits, failClosed ones get 503 + Retry-After
    fleet.redis.cut()
    await chat(oc)
    with pytest.raises(openai.InternalServerError) as err:
        await chat(fleet.oai("sk-closed"))
    assert err.value.status_code == 503 and err.value.response.headers.get("retry-after")
    fleet.redis.restore()
    await asyncio.sleep(1.0)
    await chat(fleet.oai("sk-closed"))
