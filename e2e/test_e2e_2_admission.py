"""Prefix cache + affinity, keys, quotas and a flood beyond capacity, through the SDKs.
Depends on: engine prefix cache + usage, router prefix routing, admission (tenants, rpm, fair
priority queue), local runtime. Runs before the fault tests (they restart parts of the stack)."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from typing import Any

import anthropic
import openai
import pytest

from supernode.api import constants as C

NON_THINK = {"thinking": {"type": "disabled"}}
LONG_PREFIX = " ".join(f"Rule {i}: answer politely and cite the handbook section {i * 7 % 31}." for i in range(40))


def test_a_repeated_long_prefix_is_served_from_cache_by_the_same_group(stack: Any) -> None:
    client = stack.openai()
    served, cached = [], []
    for question in ("What is rule 3?", "What is rule 5?", "What is rule 8?"):
        raw = client.chat.completions.with_raw_response.create(
            model=stack.FLASH, max_tokens=2, extra_body=NON_THINK,
            messages=[{"role": "system", "content": LONG_PREFIX}, {"role": "user", "content": question}])
        r = raw.parse()
        served.append(raw.headers[C.HEADER_ENDPOINT])
        details = r.usage.prompt_tokens_details if r.usage else None
        cached.append((details.cached_tokens or 0) if details else 0)
    assert len(set(served)) == 1, f"prefix affinity: all three went to one group, got {served}"
    assert cached[0] == 0 or cached[0] < cached[1]
    assert cached[1] > 0 and cached[2] > 0, f"cached tokens per request: {cached}"


def test_a_bad_key_is_401_in_both_api_shapes(stack: Any) -> None:
    with pytest.raises(openai.AuthenticationError) as oa:
        stack.openai(key="sk-not-a-key").chat.completions.create(
            model=stack.FLASH, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert oa.value.status_code == 401
    with pytest.raises(anthropic.AuthenticationError) as an:
        stack.anthropic(key="sk-not-a-key").messages.create(
            model=stack.FLASH, max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    assert an.value.status_code == 401


def _timed(client: openai.OpenAI, model: str, max_tokens: int,
           started: threading.Event | None = None) -> tuple[str, str]:
    """Status and the router's request id (to find the request in the ledger); `started` is set at
    the first streamed chunk."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "flood"}], max_tokens=max_tokens, stream=True,
            extra_body={**NON_THINK, "ignore_eos": True})
        for _ in raw.parse():
            if started is not None:
                started.set()
    except openai.RateLimitError:
        return "429", ""
    return "ok", raw.headers[C.HEADER_REQUEST_ID]


def test_a_flood_beyond_capacity_queues_then_serves_higher_tier_first_never_hangs(stack: Any) -> None:
    """Flash non-think admits 2 groups x 4 (engine.maxConcurrency); 8 long blockers fill it, then the
    free tier queues, then the premium tier queues. Freed slots go to the premium tier first although
    the free tier queued earlier (admission times from the ledger); everything ends, nothing hangs."""
    acme, hobby = stack.openai(), stack.openai(key=stack.HOBBY_KEY)
    t_start = time.monotonic()
    running = [threading.Event() for _ in range(8)]
    with cf.ThreadPoolExecutor(max_workers=16) as pool:
        blockers = [pool.submit(_timed, acme, stack.FLASH, 200 + 20 * i, running[i]) for i in range(8)]
        for ev in running:
            assert ev.wait(60), "blockers stream"
        free = [pool.submit(_timed, hobby, stack.FLASH, 4) for _ in range(3)]
        time.sleep(0.2)  # the free tier is queued first
        premium = [pool.submit(_timed, acme, stack.FLASH, 4) for _ in range(3)]
        results = {name: [f.result(timeout=120) for f in futs]
                   for name, futs in (("blockers", blockers), ("free", free), ("premium", premium))}
    assert time.monotonic() - t_start < 120, "never a hang"
    assert all(status in ("ok", "429") for rs in results.values() for status, _ in rs)
    assert all(status == "ok" for status, _ in results["premium"] + results["blockers"])
    rows = {r["request_id"]: r for r in stack.usage_rows("hobby") + stack.usage_rows("acme")}

    def admitted(name: str) -> list[float]:
        return sorted(float(rows[rid]["started_at"]) + float(rows[rid]["queued_seconds"])  # type: ignore[arg-type]
                      for status, rid in results[name] if status == "ok")

    first_blocker_done = min(float(rows[rid]["finished_at"]) for _, rid in results["blockers"])  # type: ignore[arg-type]
    premium, free_ = admitted("premium"), admitted("free")
    assert premium[0] >= first_blocker_done - 0.05, "premium requests waited for a slot (were queued)"
    if free_:
        assert free_[0] >= first_blocker_done - 0.05, "free requests were queued"
        assert premium[-1] <= free_[0] + 0.02, f"premium admitted first: {premium} vs free {free_}"


def test_a_tenant_over_its_rate_quota_gets_429_with_retry_after(stack: Any) -> None:
    client = stack.openai(key=stack.HOBBY_KEY)
    for _ in range(20):  # hobby: rpm 12
        try:
            client.chat.completions.create(model=stack.FLASH, messages=[{"role": "user", "content": "q"}],
                                           max_tokens=1, extra_body=NON_THINK)
        except openai.RateLimitError as exc:
            assert exc.status_code == 429
            assert float(exc.response.headers["retry-after"]) >= 1
            return
    pytest.fail("20 requests within a minute never hit the free tenant's rpm 12")
