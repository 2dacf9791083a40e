"""Failures: kill -9 an engine rank mid-stream, kill -9 the router. Depends on: local runtime
supervision (gang restart, router restart), engine health, router retries + readiness, the
usage ledger."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import openai

from supernode.api import constants as C

NON_THINK = {"thinking": {"type": "disabled"}}


def _group(stack: Any, deployment: str, index: int) -> Any:
    return next(g for g in stack.state().groups if g.deployment == deployment and g.group == index)


def test_kill_9_a_rank_mid_stream_fails_explicitly_and_the_group_restarts(stack: Any) -> None:
    before = _group(stack, "pro", 0)
    assert before.phase == "Ready" and len(before.ranks) == 2
    client = stack.openai()
    stream = client.chat.completions.create(
        model=stack.PRO, messages=[{"role": "user", "content": "a long answer please"}], max_tokens=400,
        stream=True, extra_body={**NON_THINK, "ignore_eos": True})
    outcome = "no failure seen"
    t0 = time.monotonic()
    try:
        for i, chunk in enumerate(stream):
            if i == 1:
                os.kill(before.ranks[1].pid, signal.SIGKILL)  # the worker: the leader's HTTP stays up
            if chunk.choices and chunk.choices[0].finish_reason:
                outcome = f"finished: {chunk.choices[0].finish_reason}"
    except (openai.APIError, httpx.HTTPError) as exc:
        outcome = f"failed: {type(exc).__name__}"
    assert time.monotonic() - t0 < 60, "the broken stream must end, not hang"
    assert outcome.startswith("failed") or outcome in ("finished: error", "finished: length"), outcome
    stack.wait_for("pro/0 to be restarted", lambda: _group(stack, "pro", 0).restarts >= 1, 30)
    stack.wait_for("pro/0 to be ready again", lambda: _group(stack, "pro", 0).phase == "Ready", 180)
    after = _group(stack, "pro", 0)
    assert {r.pid for r in after.ranks}.isdisjoint({r.pid for r in before.ranks})
    deadline = time.monotonic() + 30  # the router re-reads the endpoint file within ~1 s
    while True:
        try:
            r = client.chat.completions.create(model=stack.PRO, messages=[{"role": "user", "content": "again"}],
                                               max_tokens=4, extra_body=NON_THINK)
            break
        except openai.APIStatusError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert r.usage is not None and r.usage.completion_tokens >= 1


def _published_ready(stack: Any, url: str) -> bool:
    data = json.loads((stack.state_dir / "endpoints.json").read_text())
    return bool(next(e["ready"] for e in data["endpoints"] if e["url"] == url))


def test_while_a_group_restarts_it_is_unpublished_and_requests_go_to_the_other_group(stack: Any) -> None:
    dead = _group(stack, "flash", 0)
    os.kill(dead.ranks[0].pid, signal.SIGKILL)
    stack.wait_for("flash/0 to be unpublished", lambda: not _published_ready(stack, dead.url), 10)
    client = stack.openai()
    served_while_down = []
    for _ in range(4):
        down_before = not _published_ready(stack, dead.url)
        raw = client.chat.completions.with_raw_response.create(
            model=stack.FLASH, messages=[{"role": "user", "content": "still there?"}], max_tokens=2,
            extra_body=NON_THINK)
        if down_before and not _published_ready(stack, dead.url):
            served_while_down.append(raw.headers[C.HEADER_ENDPOINT])
    # x-supernode-endpoint names the group (deployment/group), never its address
    assert served_while_down and f"{dead.deployment}/{dead.group}" not in served_while_down, served_while_down
    stack.wait_for("flash/0 to be ready again", lambda: _group(stack, "flash", 0).phase == "Ready", 180)
    stack.wait_for("flash/0 to be published again", lambda: _published_ready(stack, dead.url), 10)


def test_kill_9_the_router_keeps_answered_usage_in_the_ledger(stack: Any) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=stack.FLASH, messages=[{"role": "user", "content": "meter me"}], max_tokens=3, extra_body=NON_THINK)
    request_id = raw.headers[C.HEADER_REQUEST_ID]
    assert raw.parse().usage is not None
    state = stack.state()
    assert state.router_pid
    os.kill(state.router_pid, signal.SIGKILL)
    stack.wait_for("the router to be restarted", lambda: stack.state().router_restarts >= state.router_restarts + 1
                   and stack.state().router_phase == "Ready", 90)
    rows = stack.usage_rows("acme")
    mine = [r for r in rows if r["request_id"] == request_id]
    assert len(mine) == 1 and mine[0]["status"] == "ok" and int(mine[0]["completion_tokens"]) >= 1  # type: ignore[call-overload]
