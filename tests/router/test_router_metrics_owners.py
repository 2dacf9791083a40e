"""Router metrics: one owner per metric, no tenant label on histograms, and an endpoint's series go
when discovery drops the endpoint. Through the real router app (admission on) and /metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from router_stack import MODEL, Stack, ep, wait_for

from supernode.router.admission.testing import tenant, tenants_file


def families(text: str) -> dict[str, list[dict[str, str]]]:
    return {f.name: [s.labels for s in f.samples] for f in text_string_to_metric_families(text)}


async def test_one_owner_per_metric_and_no_tenant_on_histograms(stack: Stack, tmp_path: Path) -> None:
    a = await stack.engine("a")
    stack.write_endpoints([ep(a)])
    tenants_file(tenant("acme").key("sk-acme").rpm(1)).write(tmp_path / "tenants.yaml")
    url = await stack.router({"admission": {"tenants_file": str(tmp_path / "tenants.yaml")}})
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-acme", max_retries=0)
    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.RateLimitError):  # rpm 1
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    async with httpx.AsyncClient() as h:
        text = (await h.get(f"{stack.metrics_url}/metrics")).text
    fams = families(text)
    for gone in ("supernode_router_admission_queue_length", "supernode_router_admission_rejections",
                 "supernode_router_queue_wait_seconds"):
        assert gone not in fams, f"{gone} is exported twice (its owner is the other side)"
    assert fams["supernode_router_queue_length"] and fams["supernode_router_admission_queue_wait_seconds"]
    assert [s for s in fams["supernode_router_rejections"] if s.get("reason") == "rpm"]
    histograms = [n for n, f in ((f.name, f) for f in text_string_to_metric_families(text)) if f.type == "histogram"]
    assert "supernode_router_time_to_first_token_seconds" in histograms
    for name in histograms:
        assert all("tenant" not in labels for labels in fams[name]), f"{name} has a tenant label"
    assert any(s.get("tenant") == "acme" for s in fams["supernode_router_requests"])  # counters keep it


async def test_endpoint_series_go_when_the_endpoint_goes(stack: Stack) -> None:
    a, b = await stack.engine("a"), await stack.engine("b")
    stack.write_endpoints([ep(a), ep(b)])
    await stack.router({"health": {"scrape_interval_s": 0.05}})

    async def series() -> set[str]:
        async with httpx.AsyncClient() as h:
            fams = families((await h.get(f"{stack.metrics_url}/metrics")).text)
        return {s["endpoint"] for n in ("supernode_router_endpoint_healthy", "supernode_router_endpoint_load",
                                        "supernode_router_endpoint_capacity", "supernode_router_inflight_requests",
                                        "supernode_router_prefix_index_blocks")
                for s in fams.get(n, [])}

    for _ in range(100):  # both endpoints scraped
        if await series() == {a, b}:
            break
        await asyncio.sleep(0.05)
    assert await series() == {a, b}
    stack.write_endpoints([ep(a)])
    app = stack.router_app
    assert app is not None
    await wait_for(lambda: app.state.router.table.get(b) is None)
    for _ in range(5):  # and stays gone over the next scrape rounds
        assert await series() == {a}
        await asyncio.sleep(0.05)
