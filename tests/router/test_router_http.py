"""Integration: the router over real HTTP against fake engines, with the official SDKs as clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fake_engine import Behaviour
from router_stack import MODEL, Stack, ep, served_name, wait_for

from supernode.api import constants as C


async def two_engines(stack: Stack, **router_extra: object) -> str:
    a = await stack.engine("a")
    b = await stack.engine("b")
    stack.write_endpoints([ep(a), ep(b)])
    return await stack.router(dict(router_extra))  # type: ignore[arg-type]


async def test_openai_sdk_chat_non_streaming_thinking_and_headers(stack: Stack) -> None:
    url = await two_engines(stack)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], reasoning_effort="max")
    resp = raw.parse()
    assert resp.choices[0].message.content.startswith(("a-w0", "b-w0"))
    assert resp.choices[0].message.reasoning_content.startswith("think0")  # type: ignore[attr-defined]
    assert resp.usage is not None and resp.usage.completion_tokens_details.reasoning_tokens == 3
    assert raw.headers[C.HEADER_SERVED_MODE] == "think-max"
    assert raw.headers[C.HEADER_SERVED_MODEL] == MODEL
    assert raw.headers[C.HEADER_ENDPOINT] in {served_name(u) for u in stack.engine_urls.values()}
    sent = next(r for e in stack.engines.values() for r in e.requests)
    assert sent["chat_template_kwargs"] == {"thinking": True, "reasoning_effort": "max"}
    assert "reasoning_effort" not in sent


async def test_openai_sdk_streaming_non_think_alias(stack: Stack) -> None:
    url = await two_engines(stack)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    stream = await client.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    text, reasoning, usage = "", "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            reasoning += getattr(chunk.choices[0].delta, "reasoning_content", None) or ""
        if chunk.usage:
            usage = chunk.usage
    assert "-w5" in text and reasoning == ""
    assert usage is not None and usage.completion_tokens == 6
    sent = next(r for e in stack.engines.values() for r in e.requests)
    assert sent["chat_template_kwargs"] == {"thinking": False} and sent["model"] == MODEL


async def test_openai_completions_and_models(stack: Stack) -> None:
    url = await two_engines(stack)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    resp = await client.completions.create(model=MODEL, prompt="once upon", max_tokens=4)
    assert resp.choices[0].text
    names = {m.id async for m in client.models.list()}
    assert {MODEL, "deepseek-chat", "deepseek-reasoner"} <= names


async def test_anthropic_sdk_messages_non_streaming_with_thinking(stack: Stack) -> None:
    url = await two_engines(stack)
    client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
    msg = await client.messages.create(model="claude-sonnet-4-6", max_tokens=100, system="be brief",
                                       messages=[{"role": "user", "content": "hi"}],
                                       thinking={"type": "enabled", "budget_tokens": 1024})
    kinds = [b.type for b in msg.content]
    assert kinds == ["thinking", "text"]
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 9
    sent = next(r for e in stack.engines.values() for r in e.requests)
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["model"] == MODEL and sent["chat_template_kwargs"]["thinking"] is True


async def test_anthropic_sdk_streaming_events(stack: Stack) -> None:
    url = await two_engines(stack)
    client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
    events: list[str] = []
    async with client.messages.stream(model="claude-haiku-4", max_tokens=100,
                                      messages=[{"role": "user", "content": "hi"}],
                                      extra_body={"output_config": {"effort": "max"}}) as stream:
        async for event in stream:
            events.append(event.type)
        final = await stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "message_delta" in events
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking.startswith("think0")  # type: ignore[union-attr]
    assert final.usage.output_tokens == 9 and final.stop_reason == "end_turn"
    sent = next(r for e in stack.engines.values() for r in e.requests)
    assert sent["chat_template_kwargs"] == {"thinking": True, "reasoning_effort": "max"}


async def test_anthropic_thinking_disabled_gives_text_only(stack: Stack) -> None:
    url = await two_engines(stack)
    client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
    msg = await client.messages.create(model="claude-sonnet-4", max_tokens=50, thinking={"type": "disabled"},
                                       messages=[{"role": "user", "content": "hi"}])
    assert [b.type for b in msg.content] == ["text"]
    with pytest.raises(anthropic.NotFoundError):  # claude-opus* → pro, which no endpoint serves here
        await client.messages.create(model="claude-opus-4", max_tokens=5, messages=[{"role": "user", "content": "x"}])


async def test_errors_in_each_api_shape(stack: Stack) -> None:
    url = await two_engines(stack)
    oa = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError) as nf:
        await oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as br:
        await oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                         max_tokens=10**9)
    assert br.value.body["param"] == "max_tokens"  # type: ignore[index]
    an = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as anf:
        await an.messages.create(model="gpt-4", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert anf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{url}/v1/messages", content=b"{not json")
        assert r.status_code == 400 and r.json()["type"] == "error"
        r = await h.post(f"{url}/v1/chat/completions", content=b"x" * (9 * 1024 * 1024))
        assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
        r = await h.post(f"{url}/v1/messages", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


async def test_retry_on_another_endpoint_before_first_byte(stack: Stack) -> None:
    bad = await stack.engine("bad", Behaviour(name="bad", fail_status=500))
    dead = "http://127.0.0.1:9"  # nothing listens: connect refused
    good = await stack.engine("good")
    stack.write_endpoints([ep(bad), ep(dead), ep(good)])
    url = await stack.router()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    for stream in (False, True):
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"retry {stream}"}], stream=stream)
        assert raw.headers[C.HEADER_ENDPOINT] == served_name(good)
        if stream:
            assert [c async for c in raw.parse()]  # type: ignore[union-attr]


async def test_error_event_after_first_byte_not_a_hang(stack: Stack) -> None:
    hang = await stack.engine("hang", Behaviour(name="hang", hang_after_first_chunk=True))
    stack.write_endpoints([ep(hang)])
    url = await stack.router()
    async with httpx.AsyncClient(timeout=10) as h:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
        async with h.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            text = (await r.aread()).decode()
    assert r.status_code == 200
    assert '"error"' in text and "upstream_timeout" in text and "[DONE]" not in text


async def test_client_disconnect_cancels_upstream(stack: Stack) -> None:
    slow = await stack.engine("slow", Behaviour(name="slow", chunk_delay_s=0.3, answer_words=50))
    stack.write_endpoints([ep(slow)])
    url = await stack.router()
    engine = stack.engines["slow"]
    async with httpx.AsyncClient(timeout=10) as h:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
        async with h.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            async for _ in r.aiter_bytes():
                break
    await wait_for(lambda: engine.cancelled == 1)
    assert engine.completed == 0


async def test_draining_endpoint_gets_no_new_requests_and_file_changes_apply(stack: Stack) -> None:
    a = await stack.engine("a")
    b = await stack.engine("b")
    stack.write_endpoints([ep(a), ep(b, draining=True)])
    url = await stack.router()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    for i in range(6):
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}])
    assert len(stack.engines["a"].requests) == 6 and not stack.engines["b"].requests
    stack.write_endpoints([ep(a, draining=True), ep(b)])
    app = stack.router_app
    assert app is not None
    await wait_for(lambda: (s := app.state.router.table.get(a)) is not None and s.endpoint.draining)
    for i in range(3):
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"r{i}"}])
    assert len(stack.engines["b"].requests) == 3
    stack.write_endpoints([])
    await wait_for(lambda: len(app.state.router.table) == 0)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])


async def test_health_scrape_ejects_and_readmits(stack: Stack) -> None:
    a = await stack.engine("a")
    stack.write_endpoints([ep(a)])
    await stack.router({"health": {"scrape_interval_s": 0.05, "unhealthy_after": 2, "ejection_backoff_s": 0.3}})
    app = stack.router_app
    assert app is not None
    engine = stack.engines["a"]
    engine.behaviour.fail_status = 500
    await wait_for(lambda: not app.state.router.table.get(a).healthy)
    ejected_at = time.monotonic()
    async with httpx.AsyncClient() as h:
        assert (await h.get(f"{stack.router_url}/ready")).status_code == 503
        engine.behaviour.fail_status = None
        await wait_for(lambda: app.state.router.table.get(a).healthy)
        assert time.monotonic() - ejected_at >= 0.25, "re-admitted before its back-off ended"
        assert (await h.get(f"{stack.router_url}/ready")).status_code == 200
        metrics = (await h.get(f"{stack.metrics_url}/metrics")).text
    assert "supernode_router_endpoint_healthy" in metrics
    assert 'supernode_router_endpoint_ejections_total{reason="probe"} 1.0' in metrics


async def test_metrics_and_meter_before_final_bytes(stack: Stack) -> None:
    from supernode.router.contracts import UsageRecord

    records: list[UsageRecord] = []
    opened: list[UsageRecord] = []

    class ListMeter:
        def open(self, record: UsageRecord) -> None:
            opened.append(record)

        def progress(self, record: UsageRecord) -> None:
            pass

        def record(self, record: UsageRecord) -> None:
            records.append(record)

        def close(self) -> None:
            pass

    a = await stack.engine("a")
    stack.write_endpoints([ep(a)])
    url = await stack.router(meter_factory=lambda _c: ListMeter())
    async with httpx.AsyncClient(timeout=10) as h:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
        async with h.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            seen_before_done = None
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    seen_before_done = len(records)
        assert seen_before_done == 1
        rec = records[0]
        assert rec.status == "ok" and rec.usage.completion_tokens == 9 and rec.usage.reasoning_tokens == 3
        assert rec.endpoint == served_name(a) and rec.served_mode.value == "think-high"
        assert [o.status for o in opened] == ["open"] and opened[0].key == rec.key  # opened at admission
        text = (await h.get(f"{stack.metrics_url}/metrics")).text
    assert 'supernode_router_requests_total{code="200",mode="think-high",model="deepseek-v4-flash"' in text
    assert "supernode_router_time_to_first_token_seconds_bucket" in text
    assert 'kind="reasoning"' in text


async def test_queued_stream_gets_keepalives(stack: Stack) -> None:
    from supernode.router.contracts import ANONYMOUS, PoolKey
    from supernode.router.open_admission import OpenTicket

    release = asyncio.Event()

    class SlowGate:
        def authenticate(self, api_key: str | None) -> object:
            return ANONYMOUS

        async def admit(self, ctx: object, pools: list[PoolKey]) -> OpenTicket:
            await release.wait()
            return OpenTicket(pools[0], queued_seconds=0.5)

        def queue_length(self) -> int:
            return 0 if release.is_set() else 1

    a = await stack.engine("a")
    stack.write_endpoints([ep(a)])
    url = await stack.router(gatekeeper_factory=lambda _c, _cap: SlowGate())
    async with httpx.AsyncClient(timeout=10) as h:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
        asyncio.get_running_loop().call_later(0.7, release.set)
        async with h.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            text = (await r.aread()).decode()
    assert text.startswith(": keep-alive") and text.rstrip().endswith("data: [DONE]")


async def test_engine_4xx_is_passed_on_in_the_client_shape_without_retry(stack: Stack) -> None:
    bad = await stack.engine("bad", Behaviour(name="bad", fail_status=400))
    stack.write_endpoints([ep(bad)])
    url = await stack.router()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    assert "bad failing" in str(e.value)
    an = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as ae:
        await an.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert ae.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(stack.engines["bad"].requests) == 2


@pytest.mark.parametrize(("error", "code", "param"), [
    ({"code": "context_length_exceeded", "param": "messages"}, "context_length_exceeded", "messages"),
    ({"code": 400, "param": ["messages"]}, "upstream_rejected", None),  # vLLM's numeric code; not an identifier
    ({"code": "a code with spaces"}, "upstream_rejected", None),
])
async def test_engine_4xx_keeps_the_engines_error_code_and_param(stack: Stack, error: dict[str, Any], code: str,
                                                                  param: str | None) -> None:
    bad = await stack.engine("bad", Behaviour(name="bad", fail_status=400, fail_error=error))
    stack.write_endpoints([ep(bad)])
    url = await stack.router()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert (e.value.code, e.value.param) == (code, param)
    assert e.value.body["message"] == "engine: bad failing"  # type: ignore[index]


async def test_engine_4xx_whose_error_is_not_an_object_is_still_a_4xx(stack: Stack) -> None:
    bad = await stack.engine("bad", Behaviour(name="bad", fail_status=422, fail_error="unprocessable"))
    stack.write_endpoints([ep(bad)])
    url = await stack.router()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "upstream_rejected" and "unprocessable" in e.value.message


async def test_completions_stream_passes_through(stack: Stack) -> None:
    url = await two_engines(stack)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    stream = await client.completions.create(model=MODEL, prompt="once", max_tokens=4, stream=True)
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text.count("-w") == 4


async def test_non_streaming_client_disconnect_releases_upstream(stack: Stack) -> None:
    slow = await stack.engine("slow", Behaviour(name="slow", first_byte_delay_s=2))
    stack.write_endpoints([ep(slow)])
    url = await stack.router()
    app = stack.router_app
    assert app is not None
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(timeout=0.3) as h:
        with pytest.raises(httpx.ReadTimeout):
            await h.post(f"{url}/v1/chat/completions", json=body)
    state = app.state.router.table.get(slow)
    await wait_for(lambda: state.inflight == 0, timeout=1.0)  # long before the engine would answer
    async with httpx.AsyncClient() as h:
        text = (await h.get(f"{stack.metrics_url}/metrics")).text
    assert 'code="499"' in text


async def test_first_byte_timeout_retries_on_another_endpoint(stack: Stack) -> None:
    slow = await stack.engine("slow", Behaviour(name="slow", first_byte_delay_s=5))
    fast = await stack.engine("fast")
    stack.write_endpoints([ep(slow), ep(fast)])
    url = await stack.router({"timeouts": {"first_byte_s": 0.3}})
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    for i in range(24):  # different prompts until one is routed to the slow engine first
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"prompt {i}"}], stream=True)
        assert raw.headers[C.HEADER_ENDPOINT] == served_name(fast)
        if stack.engines["slow"].requests:
            break
    assert stack.engines["slow"].requests  # it was tried, timed out, and the request moved on


async def test_the_approximate_index_learns_a_pick_only_once_the_endpoint_answered(stack: Stack) -> None:
    bad = await stack.engine("bad", Behaviour(name="bad", fail_status=500))
    good = await stack.engine("good")
    stack.write_endpoints([ep(bad), ep(good)])
    url = await stack.router()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    index = stack.router_app.state.router.profile.index  # type: ignore[union-attr]
    for i in range(8):  # new prefixes spread by their tie-break: some are tried on `bad` first (500)
        system = f"You are tenant {i}'s careful assistant. " * 20  # several prefix blocks
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "system", "content": system}, {"role": "user", "content": "q"}])
        assert raw.headers[C.HEADER_ENDPOINT] == served_name(good)
    assert len(stack.engines["bad"].requests) > 0  # it was picked and failed before the first byte
    assert index.size(bad) == 0 and index.size(good) > 0
