"""Autoscaling signals over HTTP: queued requests (and tokens, oldest wait), admitted in flight, spill-over
and cold-model refusals per model and mode, as JSON (`/autoscaling/signals`) and Prometheus series."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from fake_engine import Behaviour  # type: ignore[import-not-found]
from router_stack import MODEL, Stack, ep, wait_for  # type: ignore[import-not-found]

from supernode.router.demand import SIGNALS_PATH

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8,
        "thinking": {"type": "disabled"}}


def pool(body: dict[str, Any], mode: str = "non-think") -> dict[str, Any]:
    return next((p for p in body["pools"] if p["model"] == MODEL and p["mode"] == mode), {})


async def test_queue_in_flight_and_engine_numbers_are_exported(stack: Stack, tmp_path: Path) -> None:
    url = await stack.engine("e1", Behaviour(first_byte_delay_s=0.6))
    stack.write_endpoints([ep(url, maxConcurrency=1, deployment="default/flash")])
    await stack.router({"admission": {"queue": {"dispatch_interval_seconds": 0.05, "max_wait_seconds": 10}}})
    async with httpx.AsyncClient(timeout=10) as client:
        calls = [asyncio.create_task(client.post(f"{stack.router_url}/v1/chat/completions", json=BODY))
                 for _ in range(3)]
        seen: dict[str, Any] = {}

        async def busy() -> bool:
            seen.update((await client.get(stack.router_url + SIGNALS_PATH)).json())
            return pool(seen).get("queued") == 2 and pool(seen).get("inFlight") == 1

        for _ in range(100):
            if await busy():
                break
            await asyncio.sleep(0.02)
        row = pool(seen)
        assert (row["queued"], row["inFlight"]) == (2, 1), seen
        assert row["queuedTokens"] > 0 and row["oldestWaitSeconds"] >= 0
        model = next(m for m in seen["models"] if m["model"] == MODEL)
        assert model["readyGroups"] == 1 and model["deployments"] == ["default/flash"]
        assert model["maxConcurrency"] == 1
        text = (await client.get(f"{stack.router_url}/metrics")).text
        assert f'supernode_router_pool_queued_requests{{mode="non-think",model="{MODEL}"}} 2.0' in text
        assert [r.status_code for r in await asyncio.gather(*calls)] == [200, 200, 200]
        after = pool((await client.get(stack.router_url + SIGNALS_PATH)).json())
        assert (after["queued"], after["inFlight"], after["admittedTotal"]) == (0, 0, 3)


async def test_a_cold_model_counts_refused_demand(stack: Stack, tmp_path: Path) -> None:
    stack.write_endpoints([ep("http://127.0.0.1:9", ready=False)])
    await stack.router()
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.post(f"{stack.router_url}/v1/chat/completions", json=BODY)
        assert r.status_code == 503
        await wait_for(lambda: True)
        row = pool((await client.get(stack.router_url + SIGNALS_PATH)).json())
        assert row["noCapacityTotal"] == 1 and row["queued"] == 0
