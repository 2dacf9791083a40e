"""Admission and metering through the real router over HTTP on 127.0.0.1 (fake engines, real uvicorn)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fake_engine import Behaviour  # type: ignore[import-not-found]
from router_stack import MODEL, Stack, ep, wait_for  # type: ignore[import-not-found]

from supernode.router.admission import Gatekeeper
from supernode.router.admission.tenants import hash_key
from supernode.router.admission.testing import tenant, tenants_file
from supernode.router.metering import MeteredLedger

BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 16,
    "thinking": {"type": "disabled"},
}


@dataclass
class Wiring:
    """Handles on what the app built from the config's admission/metering sections."""

    gate: Gatekeeper
    meter: MeteredLedger


async def start(stack: Stack, tmp_path: Path, *, queue: dict[str, Any], behaviour: Behaviour) -> Wiring:
    url = await stack.engine("e1", behaviour)
    stack.write_endpoints([ep(url, maxConcurrency=1)])
    tenants_file(
        tenant("acme").tier("premium").key("sk-acme").rpm(4),
        tenant("bob").tier("free").key("sk-bob").set(allowedModes=["non-think"]),
    ).write(tmp_path / "tenants.yaml")
    admission = {
        "tenants_file": str(tmp_path / "tenants.yaml"),
        "queue": {"dispatch_interval_seconds": 0.05, **queue},
        "admin": {"key_sha256": hash_key("sk-admin")},
    }
    await stack.router({"admission": admission, "metering": {"ledger_path": str(tmp_path / "usage.db")}})
    assert stack.router_app is not None
    st = stack.router_app.state.router
    assert isinstance(st.gatekeeper, Gatekeeper) and isinstance(st.meter, MeteredLedger)
    return Wiring(st.gatekeeper, st.meter)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_keys_limits_queue_and_ledger_over_http(stack: Stack, tmp_path: Path) -> None:
    w = await start(stack, tmp_path, queue={"max_wait_seconds": 1.0}, behaviour=Behaviour(first_byte_delay_s=0.3))
    chat = f"{stack.router_url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(chat, json=BODY)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await c.post(chat, json=BODY, headers=auth("sk-wrong"))
        assert r.status_code == 401
        r = await c.post(
            chat, json={**BODY, "thinking": {"type": "enabled"}, "reasoning_effort": "max"}, headers=auth("sk-bob")
        )
        assert r.status_code == 403  # bob may only use non-think

        # capacity 1: the second request waits in the queue for the first, then runs
        first, second = await asyncio.gather(
            c.post(chat, json=BODY, headers=auth("sk-acme")), c.post(chat, json=BODY, headers=auth("sk-bob"))
        )
        assert first.status_code == 200 and second.status_code == 200

        # a request that would wait beyond the bound gets 429 with Retry-After and the limit named
        results = await asyncio.gather(*(c.post(chat, json=BODY, headers=auth("sk-bob")) for _ in range(6)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 1 and 429 in codes
        rejected = next(r for r in results if r.status_code == 429)
        assert int(rejected.headers["retry-after"]) >= 1
        assert rejected.headers["x-ratelimit-limit-name"] in ("queue_wait", "queue_timeout")

        # acme's rpm of 4: one used above, three more fit, the next is rejected
        for _ in range(3):
            assert (await c.post(chat, json=BODY, headers=auth("sk-acme"))).status_code == 200
        r = await c.post(chat, json=BODY, headers=auth("sk-acme"))
        assert r.status_code == 429 and r.headers["x-ratelimit-limit-name"] == "rpm"
        assert r.json()["error"]["type"] == "rate_limit_error"

        # every answered request is in the ledger, queue time included
        rows = w.meter.rows()
        ok = [x for x in rows if x["status"] == "ok"]
        assert sum(1 for x in ok if x["tenant"] == "acme") == 4
        assert len(ok) == sum(1 for r in [first, second, *results] if r.status_code == 200) + 3
        assert max(x["queued_seconds"] for x in ok) > 0.2
        assert all(x["prompt_tokens"] > 0 and x["completion_tokens"] > 0 for x in ok)

        # the admin API on the same server
        usage = await c.get(f"{stack.router_url}/admin/usage", params={"tenant": "acme"}, headers=auth("sk-admin"))
        assert usage.status_code == 200 and usage.json()["totals"][0]["requests"] == 4
        denied = await c.get(f"{stack.router_url}/admin/usage", headers=auth("sk-acme"))
        assert denied.status_code == 403
        tenants = await c.get(f"{stack.router_url}/admin/tenants", headers=auth("sk-admin"))
        assert {t["id"] for t in tenants.json()["tenants"]} == {"acme", "bob"}
    await wait_for(lambda: w.gate.queue_length() == 0)
