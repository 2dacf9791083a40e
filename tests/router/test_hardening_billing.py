"""Issue 10, billing and limits, against real servers: cut streams are billed for what was delivered,
admitted requests leave an open ledger row that a restart closes as interrupted, quotas count requests
in flight, one max_tokens rule reaches the engine, client request ids are labels, not keys."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import yaml
from fake_engine import Behaviour
from router_stack import MODEL, Stack, ep, ledger_rows, wait_for

from supernode.router.admission.tenants import hash_key
from supernode.router.admission.testing import tenant, tenants_file
from supernode.router.metering import build_meter
from supernode.router.metering.config import MeteringConfig

ADMIN = "sk-admin-billing"
KEY = "sk-acme-1"
MSGS = [{"role": "user", "content": "tell me a long story"}]
PROMPT_ESTIMATE = len("<|user|>tell me a long story\n") // 4  # the router's estimate (and the fake engine's)


def router_config(tmp_path: Path, *, quota: int | None = None, tpm: int | None = None) -> dict[str, Any]:
    t = tenant("acme").key(KEY)
    if quota is not None:
        t = t.quota(quota)
    if tpm is not None:
        t = t.tpm(tpm)
    tenants_file(t).write(tmp_path / "tenants.yaml")
    return {"admission": {"tenants_file": str(tmp_path / "tenants.yaml"), "admin": {"key_sha256": hash_key(ADMIN)},
                          "queue": {"dispatch_interval_seconds": 0}},
            "metering": {"ledger_path": str(tmp_path / "usage.sqlite3")}}



def limiter(stack: Stack) -> Any:
    assert stack.router_app is not None
    return stack.router_app.state.router.gatekeeper._limiters["acme"]


async def slow_stack(stack: Stack, tmp_path: Path, **behaviour: Any) -> str:
    engine = await stack.engine("e", Behaviour(name="e", answer_words=60, chunk_delay_s=0.03, **behaviour))
    stack.write_endpoints([ep(engine)])
    return await stack.router(router_config(tmp_path))


async def test_an_abandoned_openai_stream_is_billed_for_what_was_delivered(stack: Stack, tmp_path: Path) -> None:
    url = await slow_stack(stack, tmp_path)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    stream = await client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)  # type: ignore[arg-type]
    got = 0
    async for chunk in stream:
        got += bool(chunk.choices and chunk.choices[0].delta.content)
        if got == 5:
            break
    await stream.close()
    await wait_for(lambda: ledger_rows(tmp_path)[-1]["status"] == "cancelled")
    row = ledger_rows(tmp_path)[-1]
    assert row["prompt_tokens"] == PROMPT_ESTIMATE and 5 <= row["completion_tokens"] < 60, row
    lim = limiter(stack)  # charged against the quota/TPM accounting too, nothing left reserved
    assert lim.used_tokens == row["prompt_tokens"] + row["completion_tokens"] and lim.reserved_tokens == 0


async def test_an_abandoned_anthropic_stream_is_billed_for_what_was_delivered(stack: Stack, tmp_path: Path) -> None:
    url = await slow_stack(stack, tmp_path)
    client = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
    stream = await client.messages.create(model=MODEL, max_tokens=500, messages=MSGS,  # type: ignore[arg-type]
                                          stream=True)
    deltas = 0
    async for event in stream:
        deltas += event.type == "content_block_delta"
        if deltas == 4:
            break
    await stream.close()
    await wait_for(lambda: ledger_rows(tmp_path)[-1]["status"] == "cancelled")
    row = ledger_rows(tmp_path)[-1]
    assert row["prompt_tokens"] == PROMPT_ESTIMATE and 4 <= row["completion_tokens"] < 60, row
    assert limiter(stack).used_tokens == row["prompt_tokens"] + row["completion_tokens"]


async def test_an_upstream_failing_mid_stream_is_billed_for_what_was_delivered(stack: Stack, tmp_path: Path) -> None:
    url = await slow_stack(stack, tmp_path, fail_after_words=7)
    async with httpx.AsyncClient(timeout=10) as h:
        body = {"model": MODEL, "messages": MSGS, "stream": True}
        r = await h.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and '"error"' in r.text  # the failure is an in-stream error event
    row = ledger_rows(tmp_path)[-1]
    delivered = 3 + 7  # the fake engine thinks in 3 reasoning chunks first (think-high), then 7 words
    assert row["status"] == "error" and row["prompt_tokens"] == PROMPT_ESTIMATE
    assert row["completion_tokens"] == delivered
    assert limiter(stack).used_tokens == PROMPT_ESTIMATE + delivered


async def test_fifty_concurrent_requests_cannot_overrun_a_fifty_token_quota(stack: Stack, tmp_path: Path) -> None:
    engine = await stack.engine("e", Behaviour(name="e", answer_words=200, decode_s=0.002))
    stack.write_endpoints([ep(engine)])
    url = await stack.router(router_config(tmp_path, quota=50))
    body = {"model": MODEL, "messages": MSGS}
    async with httpx.AsyncClient(timeout=20, headers={"authorization": f"Bearer {KEY}"}) as h:
        answers = await asyncio.gather(*(h.post(f"{url}/v1/chat/completions", json=body) for _ in range(50)))
    codes = [r.status_code for r in answers]
    assert codes.count(200) >= 1 and set(codes) <= {200, 429}, codes
    used = sum(r["prompt_tokens"] + r["completion_tokens"] for r in ledger_rows(tmp_path))
    assert used <= 50, f"{used} tokens ran against a 50-token quota"
    # the engine was asked for no more than admission reserved: the quota left after the prompt
    assert all(req["max_tokens"] <= 50 - PROMPT_ESTIMATE for req in stack.engines["e"].requests)
    assert limiter(stack).reserved_tokens == 0
    assert stat.S_IMODE((tmp_path / "usage.sqlite3").stat().st_mode) == 0o600  # the ledger is private


async def test_fifty_concurrent_requests_count_against_tpm_while_in_flight(stack: Stack, tmp_path: Path) -> None:
    engine = await stack.engine("e", Behaviour(name="e", answer_words=20, decode_s=0.005))
    stack.write_endpoints([ep(engine)])
    url = await stack.router(router_config(tmp_path, tpm=50))
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 20}
    async with httpx.AsyncClient(timeout=20, headers={"authorization": f"Bearer {KEY}"}) as h:
        answers = await asyncio.gather(*(h.post(f"{url}/v1/chat/completions", json=body) for _ in range(50)))
    codes = [r.status_code for r in answers]
    # each reserves 7 + 20 tokens of the 50 per minute while it runs: only one fits, the rest are 429 tpm
    assert codes.count(200) == 1 and codes.count(429) == 49, codes
    assert {r.headers.get("x-ratelimit-limit-name") for r in answers if r.status_code == 429} == {"tpm"}


async def test_one_max_tokens_rule_and_the_engine_gets_that_value(stack: Stack, tmp_path: Path) -> None:
    engine = await stack.engine("e")
    stack.write_endpoints([ep(engine)])
    url = await stack.router({"models": {"default_max_tokens": 77}})
    async with httpx.AsyncClient(timeout=10) as h:
        for extra, sent in (({}, 77), ({"max_completion_tokens": 5}, 5), ({"max_tokens": 6}, 6),
                            ({"max_tokens": 8, "max_completion_tokens": 8}, 8)):
            r = await h.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": MSGS, **extra})
            assert r.status_code == 200, r.text
            last = stack.engines["e"].requests[-1]
            assert last["max_tokens"] == sent and "max_completion_tokens" not in last
        r = await h.post(f"{url}/v1/chat/completions",
                         json={"model": MODEL, "messages": MSGS, "max_tokens": 8, "max_completion_tokens": 9})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_completion_tokens"


async def test_client_request_ids_are_bounded_labels_and_the_ledger_key_is_ours(stack: Stack, tmp_path: Path) -> None:
    engine = await stack.engine("e")
    stack.write_endpoints([ep(engine)])
    url = await stack.router(router_config(tmp_path))
    body = {"model": MODEL, "messages": MSGS}
    async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {KEY}"}) as h:
        seen = []
        for rid in ("same-id", "same-id", "x" * 129, "bad id;<b>", "=cmd|'/c calc'!A1", "-1-1"):
            r = await h.post(f"{url}/v1/chat/completions", json=body, headers={"x-request-id": rid})
            assert r.status_code == 200
            seen.append(r.headers["x-request-id"])
        csv = (await h.get(f"{url}/admin/usage", params={"view": "rows", "format": "csv"},
                           headers={"authorization": f"Bearer {ADMIN}"})).text
    assert seen[:2] == ["same-id", "same-id"] and seen[5] == "-1-1"
    assert all(s.startswith("req_") and len(s) < 40 for s in seen[2:5])  # replaced, never echoed
    rows = ledger_rows(tmp_path)
    assert len({r["key"] for r in rows}) == len(rows) == 6  # one row each, though two ids were equal
    assert "\n'-1-1," not in csv and ",'-1-1," in csv and ",-1-1," not in csv  # formula-leading cell neutralised


async def test_admitted_requests_are_open_rows_and_a_killed_router_leaves_them_interrupted(
        stack: Stack, tmp_path: Path) -> None:
    engine = await stack.engine("e", Behaviour(name="e", answer_words=100, chunk_delay_s=0.05))
    stack.write_endpoints([ep(engine)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {**router_config(tmp_path), "discovery": {"type": "static", "path": str(stack.endpoints_path)},
           "metering": {"ledger_path": str(tmp_path / "usage.sqlite3"), "checkpoint_seconds": 0.2},
           "server": {"port": port, "metrics_port": None}, "health": {"scrape_interval_s": 0}}
    (tmp_path / "router.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "supernode.cli", "router", "--config", str(tmp_path / "router.yaml"),
                             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with httpx.AsyncClient(timeout=10) as h:
            for _ in range(200):
                try:
                    if (await h.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            body = {"model": MODEL, "messages": MSGS, "stream": True}
            async with h.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                                headers={"authorization": f"Bearer {KEY}"}) as r:
                words = 0
                async for line in r.aiter_lines():
                    words += '"content": "e-w' in line
                    if words == 12:  # ~0.6 s of streaming: a few checkpoints
                        break
                assert [row["status"] for row in ledger_rows(tmp_path)] == ["open"]  # written at admission
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    meter = build_meter(MeteringConfig(ledger_path=tmp_path / "usage.sqlite3"))  # what a restart does first
    meter.close()
    [row] = ledger_rows(tmp_path)
    assert row["status"] == "interrupted" and row["tenant"] == "acme" and row["prompt_tokens"] == PROMPT_ESTIMATE
    assert 3 < row["completion_tokens"] <= 3 + 12, row  # the last checkpoint's count (3 reasoning + words)
