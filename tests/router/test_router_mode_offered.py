"""A mode the model does not offer: a 400 naming the offered modes (both API shapes), or a spill-over
the tenant allows, reported in x-supernode-mode. Through the real router app and the official SDKs."""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from router_stack import MODEL, Stack, ep

from supernode.api import constants as C
from supernode.router.admission.testing import tenant, tenants_file

FLASH_MODES = ["non-think", "think-high"]
MSGS = [{"role": "user", "content": "hi"}]


async def test_openai_and_anthropic_get_a_400_naming_the_offered_modes(stack: Stack) -> None:
    a = await stack.engine("a")
    stack.write_endpoints([ep(a, modes=FLASH_MODES)])
    url = await stack.router()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as oe:
        await client.chat.completions.create(model=MODEL, messages=MSGS, reasoning_effort="max")  # type: ignore[arg-type]
    err = oe.value.body
    assert err["code"] == "mode_not_offered" and err["type"] == "invalid_request_error"  # type: ignore[index]
    assert "think-max" in err["message"] and "offered modes: non-think, think-high" in err["message"]  # type: ignore[index]
    claude = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as ae:
        await claude.messages.create(model=MODEL, max_tokens=5, messages=MSGS,  # type: ignore[arg-type]
                                     extra_body={"output_config": {"effort": "max"}})
    body = ae.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "offered modes: non-think, think-high" in body["error"]["message"]  # type: ignore[index]
    assert not stack.engines["a"].requests  # nothing reached the engine
    ok = await client.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS,  # type: ignore[arg-type]
                                                                extra_body={"thinking": {"type": "disabled"}})
    assert ok.headers[C.HEADER_SERVED_MODE] == "non-think"


async def test_an_offered_mode_with_no_ready_endpoint_stays_a_503(stack: Stack) -> None:
    a = await stack.engine("a")
    stack.write_endpoints([ep(a, modes=FLASH_MODES, ready=False)])
    url = await stack.router()
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": MSGS,
                                                              "reasoning_effort": "high"})
        assert r.status_code == 503 and r.headers["retry-after"]
        r = await h.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": MSGS,
                                                              "reasoning_effort": "max"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "mode_not_offered"


async def test_spill_over_where_the_tenant_allows_it_else_400(stack: Stack, tmp_path: Path) -> None:
    a = await stack.engine("a")
    stack.write_endpoints([ep(a, modes=FLASH_MODES)])
    tenants_file(tenant("acme").key("sk-acme"), tenant("strict").key("sk-strict").no_spill()).write(
        tmp_path / "tenants.yaml")
    rules = [{"from": {"model": MODEL, "mode": "think-max"}, "to": [{"model": MODEL, "mode": "think-high"}]}]
    url = await stack.router({"admission": {"tenants_file": str(tmp_path / "tenants.yaml"),
                                            "spill_over": {"enabled": True, "rules": rules}}})
    acme = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-acme", max_retries=0)
    raw = await acme.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS,  # type: ignore[arg-type]
                                                               reasoning_effort="max")
    assert raw.headers[C.HEADER_SERVED_MODE] == "think-high"
    assert stack.engines["a"].requests[-1]["chat_template_kwargs"] == {"thinking": True, "reasoning_effort": "high"}
    via_kwargs = await acme.chat.completions.with_raw_response.create(  # vLLM-style fields, same rule
        model=MODEL, messages=MSGS, extra_body={"chat_template_kwargs": {"enable_thinking": True,  # type: ignore[arg-type]
                                                                         "reasoning_effort": "max", "x": 1}})
    assert via_kwargs.headers[C.HEADER_SERVED_MODE] == "think-high"
    sent = stack.engines["a"].requests[-1]["chat_template_kwargs"]
    assert sent == {"x": 1, "thinking": True, "reasoning_effort": "high"}  # only the serving mode's keys
    strict = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-strict", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        await strict.chat.completions.create(model=MODEL, messages=MSGS, reasoning_effort="max")  # type: ignore[arg-type]
    assert "offered modes: non-think, think-high" in e.value.body["message"]  # type: ignore[index]
