"""The request path with the real admission and metering sides: keys, limits, spill-over, ledger, admin."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from fake_engine import Behaviour
from router_stack import MODEL, Stack, ep

from supernode.api import constants as C
from supernode.router.admission.tenants import hash_key
from supernode.router.admission.testing import tenant, tenants_file

ADMIN = "sk-admin-test"


async def router_with_tenants(stack: Stack, tmp_path: Path, *, endpoints: list[dict[str, object]],
                              spill: bool = False) -> str:
    tenants_file(
        tenant("acme").tier("premium").key("sk-acme-1").rpm(600),
        tenant("bob").tier("free").key("sk-bob-1").rpm(2),
    ).write(tmp_path / "tenants.yaml")
    stack.write_endpoints(endpoints)  # type: ignore[arg-type]
    rules = [{"from": {"model": MODEL, "mode": "think-max"}, "to": [{"model": MODEL, "mode": "think-high"}]}]
    return await stack.router({
        "admission": {"tenants_file": str(tmp_path / "tenants.yaml"), "admin": {"key_sha256": hash_key(ADMIN)},
                      "queue": {"keepalive_interval_seconds": 0.2, "dispatch_interval_seconds": 0.05},
                      "spill_over": {"enabled": spill, "rules": rules if spill else []}},
        "metering": {"ledger_path": str(tmp_path / "usage.sqlite3")},
    })


async def test_keys_limits_and_usage_ledger(stack: Stack, tmp_path: Path) -> None:
    a = await stack.engine("a")
    url = await router_with_tenants(stack, tmp_path, endpoints=[ep(a)])
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model=MODEL, messages=msgs)  # type: ignore[arg-type]
    with pytest.raises(anthropic.AuthenticationError) as ae:
        await anthropic.AsyncAnthropic(base_url=url, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=5, messages=msgs)  # type: ignore[arg-type]
    assert ae.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]

    acme = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-acme-1", max_retries=0)
    stream = await acme.chat.completions.create(model=MODEL, messages=msgs, stream=True)  # type: ignore[arg-type]
    assert [c async for c in stream]
    claude = anthropic.AsyncAnthropic(base_url=url, api_key="sk-bob-1", max_retries=0)  # x-api-key header
    await claude.messages.create(model="claude-haiku-4", max_tokens=5, messages=msgs)  # type: ignore[arg-type]
    await claude.messages.create(model="claude-haiku-4", max_tokens=5, messages=msgs)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as rl:
        await claude.messages.create(model="claude-haiku-4", max_tokens=5, messages=msgs)  # type: ignore[arg-type]
    assert rl.value.response.headers["retry-after"] and rl.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]

    async with httpx.AsyncClient() as h:
        r = await h.get(f"{url}/admin/usage", params={"view": "rows"}, headers={"authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200
        rows = r.json()["rows"]
        assert sorted(row["tenant"] for row in rows) == ["acme", "bob", "bob"]
        assert sorted(row["completion_tokens"] for row in rows) == [5, 5, 9]  # max_tokens=5 for bob
        assert (await h.get(f"{url}/admin/usage")).status_code == 401
        metrics = (await h.get(f"{stack.metrics_url}/metrics")).text
    assert 'supernode_router_rejections_total{reason="rpm"} 1.0' in metrics  # counted once, by the request path
    assert "supernode_router_admission_rejections_total" not in metrics


async def test_spill_over_serves_from_the_next_pool_and_says_so(stack: Stack, tmp_path: Path) -> None:
    a = await stack.engine("a")
    url = await router_with_tenants(stack, tmp_path, endpoints=[ep(a, modes=["think-high"])], spill=True)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-acme-1", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], reasoning_effort="max")
    assert raw.headers[C.HEADER_SERVED_MODE] == "think-high"
    assert stack.engines["a"].requests[0]["chat_template_kwargs"]["reasoning_effort"] == "high"


async def test_queued_streaming_request_gets_keepalives_then_answer(stack: Stack, tmp_path: Path) -> None:
    a = await stack.engine("a", Behaviour(name="a", chunk_delay_s=0.15, answer_words=5))
    url = await router_with_tenants(stack, tmp_path, endpoints=[ep(a, maxConcurrency=1)])
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
    headers = {"authorization": "Bearer sk-acme-1"}
    async with httpx.AsyncClient(timeout=20) as h:
        async def one() -> str:
            async with h.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                return (await r.aread()).decode()

        first, second = await asyncio.gather(one(), one())
    texts = sorted([first, second], key=lambda t: t.startswith(": keep-alive"))
    assert not texts[0].startswith(":") and texts[1].startswith(": keep-alive")
    assert all(t.rstrip().endswith("data: [DONE]") for t in texts)
