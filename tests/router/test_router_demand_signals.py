"""Autoscaling signals over HTTP: queued requests (and tokens, oldest wait), admitted in flight, spill-over
and cold-model refusals per model and mode, as JSON (`/autoscaling/signals`) and Prometheus series."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from fake_engine import Behaviour  # type: ignore[import-not-found]
from router_stack import MODEL, Stack, ep  # type: ignore[import-not-found]

from supernode.router.demand import SIGNALS_PATH

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8,
        "thinking": {"type": "disabled"}}


def pool(body: dict[str, Any], mode: str = "non-think") -> dict[str, Any]:
    return next((p for p in body["pools"] if p["model"] == MODEL and p["mode"] == mode), {})


async def test_queue_in_flight_and_engine_numbers_are_exported(stack: Stack, tmp_path: Path) -> None:
    url = await stack.engine("e1", Behaviour(first_byte_delay_s=0.6))
    stack.write_endpoints([ep(url, maxConcurrency=1, deployment="default/flash")])
    await stack.router({"admission": {"anonymous": True,
                                      "queue": {"dispatch_interval_seconds": 0.05, "max_wait_seconds": 10}}})
    async with httpx.AsyncClient(timeout=10) as client:
        calls = [asyncio.create_task(client.post(f"{stack.router_url}/v1/chat/completions", json=BODY))
                 for _ in range(3)]
        seen: dict[str, Any] = {}

        async def busy() -> bool:
            seen.update((await client.get(stack.metrics_url + SIGNALS_PATH)).json())
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
        text = (await client.get(f"{stack.metrics_url}/metrics")).text
        assert f'supernode_router_pool_queued_requests{{mode="non-think",model="{MODEL}"}} 2.0' in text
        assert [r.status_code for r in await asyncio.gather(*calls)] == [200, 200, 200]
        after = pool((await client.get(stack.metrics_url + SIGNALS_PATH)).json())
        assert (after["queued"], after["inFlight"], after["admittedTotal"]) == (0, 0, 3)


async def test_a_cold_model_is_held_until_a_bound_then_503_with_retry_after(stack: Stack, tmp_path: Path) -> None:
    other = await stack.router()  # a model not marked scale-to-zero fails at once, as before
    async with httpx.AsyncClient(timeout=5) as client:
        stack.write_endpoints([ep("http://127.0.0.1:9", ready=False)])
        await asyncio.sleep(0.2)
        assert (await client.post(f"{other}/v1/chat/completions", json=BODY)).status_code == 503
    stack.write_endpoints([ep("http://127.0.0.1:9", ready=False)])  # its first group is starting
    await stack.router({"cold_start": {"hold_s": 0.6, "poll_s": 0.05, "models": [MODEL]}})
    async with httpx.AsyncClient(timeout=5) as client:
        call = asyncio.create_task(client.post(f"{stack.router_url}/v1/chat/completions", json=BODY))
        await asyncio.sleep(0.3)
        held = pool((await client.get(stack.metrics_url + SIGNALS_PATH)).json())
        assert held["queued"] == 1, "the held request is queued demand the autoscaler sees"
        r = await call
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert "starting" in r.json()["error"]["message"]
        row = pool((await client.get(stack.metrics_url + SIGNALS_PATH)).json())
        assert row["noCapacityTotal"] == 1 and row["queued"] == 0


async def test_a_scaled_to_zero_model_streams_keepalives_until_its_first_group_is_ready(
        stack: Stack, tmp_path: Path) -> None:
    stack.write_endpoints([])
    await stack.router({"cold_start": {"hold_s": 10, "poll_s": 0.05, "models": [MODEL]},
                        "timeouts": {"keepalive_s": 0.1}})
    url = await stack.engine("e1")
    async with httpx.AsyncClient(timeout=10) as client:
        models = (await client.get(f"{stack.router_url}/v1/models")).json()
        assert MODEL in [m["id"] for m in models["data"]], "a cold model is still offered"

        async def stream() -> list[str]:
            async with client.stream("POST", f"{stack.router_url}/v1/chat/completions",
                                     json={**BODY, "stream": True}) as r:
                assert r.status_code == 200
                return [line async for line in r.aiter_lines() if line]

        call = asyncio.create_task(stream())
        await asyncio.sleep(0.5)
        assert not call.done()
        stack.write_endpoints([ep(url)])  # the first group became ready
        lines = await asyncio.wait_for(call, 5)
        assert any(line.startswith(":") for line in lines), "SSE keep-alives while held"
        assert lines[-1] == "data: [DONE]"


def test_kubernetes_discovery_names_the_deployments_that_scale_to_zero() -> None:
    from types import SimpleNamespace

    from supernode.api.endpoints import Endpoint
    from supernode.router.demand import ColdModels
    from supernode.router.discovery.kubernetes import KubernetesDiscovery
    from supernode.router.routing.state import EndpointTable

    mds = [{"spec": {"model": {"name": "pro", "aliases": ["p"]}, "autoscaling": {"minReplicas": 0}}},
           {"spec": {"model": {"name": "flash"}, "autoscaling": {"minReplicas": 1}}},
           {"spec": {"model": {"name": "plain"}}}]
    d = KubernetesDiscovery(lambda _: None, namespace=None, port_name="http", default_port=8000,
                            default_max_concurrency=32)
    d.mds = SimpleNamespace(cache=SimpleNamespace(items=lambda: mds))  # type: ignore[assignment]
    assert d.scale_to_zero_models() == {"pro", "p"}
    table = EndpointTable()
    cold = ColdModels(table, discovered=d.scale_to_zero_models)
    cold.observe()
    assert table.cold == {"pro", "p"} and "pro" in table.served_models()[0]
    table.update([Endpoint(url="http://127.0.0.1:1", model="pro", aliases=["p"], ready=False)])
    cold.observe()
    assert table.cold == set() and cold.starting("pro") and not cold.starting("flash")


async def test_spill_over_and_release_are_counted_per_requested_pool() -> None:
    from dataclasses import dataclass as dc

    from supernode.api.models import Mode
    from supernode.router.contracts import ANONYMOUS, PoolKey, RequestContext, Usage
    from supernode.router.demand import DemandGate

    pro, flash = PoolKey("pro", Mode.NON_THINK), PoolKey("flash", Mode.NON_THINK)

    @dc
    class T:
        pool: PoolKey
        queued_seconds: float = 0.0
        released: int = 0

        def release(self, usage: Usage) -> None:
            self.released += 1

    class Inner:
        def authenticate(self, api_key: str | None) -> Any:
            return ANONYMOUS

        async def admit(self, ctx: RequestContext, pools: Any) -> T:
            return T(flash)  # the requested pool is full: served by the next one

        def queue_length(self) -> int:
            return 0

    gate = DemandGate(Inner())  # type: ignore[arg-type]
    ctx = RequestContext(request_id="r", api="chat", tenant=ANONYMOUS, model="pro", mode=Mode.NON_THINK,
                         stream=False, prompt_tokens_estimate=10, max_tokens=5)
    ticket = await gate.admit(ctx, [pro, flash])
    rows = {(r["model"], r["mode"]): r for r in gate.pools()}
    assert rows[("pro", "non-think")]["spilledTotal"] == 1 and rows[("pro", "non-think")]["admittedTotal"] == 1
    assert rows[("flash", "non-think")]["inFlight"] == 1
    ticket.release(Usage())
    ticket.release(Usage())  # idempotent
    assert {(r["model"]): r["inFlight"] for r in gate.pools()}["flash"] == 0
    assert ticket._inner.released == 1  # type: ignore[attr-defined]


async def test_signals_are_on_the_ops_port_not_the_public_one_and_behind_the_admin_key_without_it(
        stack: Stack) -> None:
    from supernode.router.admission.tenants import hash_key

    stack.write_endpoints([])
    url = await stack.router()
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(url + SIGNALS_PATH)).status_code == 404
        assert "pools" in (await client.get(stack.metrics_url + SIGNALS_PATH)).json()
    admin = "sk-admin-signals"
    url = await stack.router({"server": {"metrics_port": None},
                              "admission": {"anonymous": True, "admin": {"key_sha256": hash_key(admin)}}})
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(url + SIGNALS_PATH)).status_code == 401
        ok = await client.get(url + SIGNALS_PATH, headers={"authorization": f"Bearer {admin}"})
        assert ok.status_code == 200 and "pools" in ok.json()
