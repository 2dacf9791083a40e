"""The real kopf operator autoscaling a deployment with pools, against the test Kubernetes API: a flood grows
the pool the routers measure as the most capable per group first (while it has nodes and room under its
maximum) — not the one declared best — then the other; idleness shrinks the least capable pool first, each
pool staying within its own bounds. Router signals: a fake router on 127.0.0.1 (test_operator_autoscaler.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from aiohttp import web
from builders import operator_md
from fake_cluster import node
from fake_router import ROUTER_NS, FakeRouter
from k8s_emulator import K8sEmulator
from operator_harness import eventually, running_operator
from test_operator_autoscaler import MODEL, get, mds, setup

from supernode.api import constants as C
from supernode.operator.scaler import AutoscalerConfig


class CapacityRouter(FakeRouter):
    """A fake router that also reports each pool's capacity per group (a router's `capacity` signal)."""

    capacity: list[dict[str, Any]] = [{"deployment": "llm/v4", "pool": "h200", "groups": 1, "weight": 3.0},
                                      {"deployment": "llm/v4", "pool": "ascend", "groups": 1, "weight": 1.0}]

    async def signals(self, request: web.Request) -> web.Response:
        response = await super().signals(request)
        body = json.loads(response.text or "{}")  # measured: h200 groups 3x the Ascend ones
        body["capacity"] = self.capacity
        return web.json_response(body, status=response.status)


def mixed() -> dict[str, Any]:
    behavior = {"scaleUpStabilizationSeconds": 0, "scaleDownStabilizationSeconds": 1, "coldStartSeconds": 1,
                "readyTimeoutSeconds": 30}
    return (operator_md("v4").model(MODEL, source=f"pvc://model-cache/{MODEL}").engine("vllm")
            .accelerator("ascend-910c", 16).parallelism(tensor=16, expert=16).placement(supernode="Required")
            .autoscaling(1, 3, behavior=behavior)
            .pool("ascend", replicas=1, minReplicas=1, maxReplicas=2, capacityWeight=2.0)  # declared: best
            .pool("h200", "nvidia-h200", 8, replicas=0, parallelism={"tensor": 8, "expert": 8}, maxReplicas=1)
            .dict())


def pools(emu: K8sEmulator) -> dict[str, int]:
    return {p["name"]: p.get("replicas", 0) for p in get(emu, "v4").get("spec", {}).get("pools", [])}


def scale_events(emu: K8sEmulator) -> list[str]:
    events = [e for e in emu.objects_of("events", "", "llm")
              if e["involvedObject"]["name"] == "v4" and e["reason"] in ("ScaledUp", "ScaledDown")]
    events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [e["message"].split(": ")[0] for e in events]


async def test_pools_scale_by_measured_capacity_within_their_own_bounds(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=2)
    await cluster.add_nodes(node("h200-0", None, devices=8, resource=C.RESOURCE_NVIDIA))
    router = CapacityRouter()
    async with router.serving(), cluster.running():
        config = AutoscalerConfig(router_namespace=ROUTER_NS, router_ops_port=router.port, interval_seconds=0.2)
        async with running_operator(url, autoscaler=config), httpx.AsyncClient(base_url=url) as c:
            router.demand[MODEL] = (0, 5)
            assert (await c.post(mds(), json=mixed())).status_code == 201
            await eventually(lambda: (get(emu, "v4").get("status") or {}).get("autoscaling", {}).get("reason")
                             == "Stable", what="stable at 1")
            router.demand[MODEL] = (40, 32)  # a flood
            await eventually(lambda: pools(emu) == {"ascend": 2, "h200": 1}, timeout=15, what="both pools grown")
            await eventually(lambda: len(scale_events(emu)) >= 2, what="events posted after the patch")
            assert scale_events(emu)[:2] == ["1 -> 2 groups (pool h200 0 -> 1)", "2 -> 3 groups (pool ascend 1 -> 2)"]
            await eventually(lambda: (get(emu, "v4").get("status") or {}).get("readyReplicas") == 3, what="3 ready")
            router.demand[MODEL] = (0, 0)  # idle: the least capable pool shrinks first, down to its minimum
            await eventually(lambda: pools(emu) == {"ascend": 1, "h200": 0}, timeout=20, what="both pools shrunk")
            await eventually(lambda: len(scale_events(emu)) >= 4, what="events posted after the patch")
            assert scale_events(emu)[2:] == ["3 -> 2 groups (pool ascend 2 -> 1)", "2 -> 1 groups (pool h200 1 -> 0)"]
            await eventually(lambda: emu.objects_of("statefulsets", "apps", "llm", f"{C.LABEL_POOL}=h200") == [],
                             what="the h200 group drained and deleted")
