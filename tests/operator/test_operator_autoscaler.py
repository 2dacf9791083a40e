"""The real kopf operator with the autoscaler on, against the test Kubernetes API; router signals come from
a fake router app on 127.0.0.1, found through a router Service and its ready pod."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from aiohttp import web
from builders import operator_md
from fake_cluster import MD_KIND, FakeCluster, node
from fake_router import ROUTER_NS, FakeRouter, router_service, serve_get
from k8s_emulator import K8sEmulator
from operator_harness import eventually, running_operator

from supernode.api import constants as C
from supernode.operator.scaler import AutoscalerConfig

MODEL = "deepseek-v4-flash"


def mds(ns: str = "llm") -> str:
    return f"/apis/{C.GROUP}/{C.VERSION}/namespaces/{ns}/{C.PLURAL}"


def md(name: str, model: str, replicas: int, lo: int, hi: int, **auto: Any) -> dict[str, Any]:
    behavior = {"scaleUpStabilizationSeconds": 0, "scaleDownStabilizationSeconds": 1, "coldStartSeconds": 1,
                "readyTimeoutSeconds": 30}
    return (operator_md(name).model(model, source=f"pvc://model-cache/{model}").engine("vllm")
            .accelerator("ascend-910c", 16).parallelism(tensor=16, expert=16).placement(supernode="Required")
            .replicas(replicas).autoscaling(lo, hi, behavior=behavior, **auto).dict())


def get(emu: K8sEmulator, name: str) -> dict[str, Any]:
    return emu.get(C.PLURAL, "llm", name, C.GROUP) or {}


def auto_status(emu: K8sEmulator, name: str) -> dict[str, Any]:
    return (get(emu, name).get("status") or {}).get("autoscaling") or {}


def condition(emu: K8sEmulator, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in (get(emu, name).get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def reasons(emu: K8sEmulator, name: str) -> list[str]:
    return [e["reason"] for e in emu.objects_of("events", "", "llm") if e["involvedObject"]["name"] == name]


async def setup(emu: K8sEmulator, superpods: int) -> FakeCluster:
    emu.declare(MD_KIND, shortnames=["md"])
    cluster = FakeCluster(emu)
    for sp in range(superpods):
        await cluster.add_nodes(node(f"sp{sp}-n0", f"sp-{sp}"))
    await router_service(emu)
    return cluster


async def test_queue_adds_a_group_idleness_drains_it_and_lost_signals_hold(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    router = FakeRouter()
    async with router.serving(), cluster.running():
        config = AutoscalerConfig(router_namespace=ROUTER_NS, router_ops_port=router.port, interval_seconds=0.2)
        async with running_operator(url, autoscaler=config), httpx.AsyncClient(base_url=url) as c:
            router.demand[MODEL] = (0, 5)
            assert (await c.post(mds(), json=md("flash", MODEL, 1, 1, 2))).status_code == 201
            await eventually(lambda: auto_status(emu, "flash").get("reason") == "Stable", what="stable at 1")
            await eventually(lambda: condition(emu, "flash", "ScalingActive").get("status") == "True",
                             what="ScalingActive")
            assert not get(emu, "flash")["metadata"].get("finalizers"), "the autoscaler loop adds no finalizer"
            router.demand[MODEL] = (40, 32)  # a flood: the queue per ready group is far above 4
            await eventually(lambda: get(emu, "flash")["spec"]["replicas"] == 2, what="scaled up to 2")
            await eventually(lambda: (get(emu, "flash").get("status") or {}).get("readyReplicas") == 2, what="2 ready")
            st = auto_status(emu, "flash")
            assert st["lastScaleDirection"] == "Up" and st["signals"]["queued"] == 40
            assert "ScaledUp" in reasons(emu, "flash")
            await eventually(lambda: auto_status(emu, "flash").get("reason") == "AtMaxReplicas", what="at max")
            await eventually(lambda: auto_status(emu, "flash").get("coldStartSeconds") is not None,
                             what="cold start learned")
            router.demand[MODEL] = (0, 0)  # idle: after the (1 s) down window one group drains and goes
            await eventually(lambda: get(emu, "flash")["spec"]["replicas"] == 1, timeout=15, what="scaled down")
            await eventually(lambda: "GroupDraining" in reasons(emu, "flash"), what="the group drained first")
            await eventually(lambda: len(emu.objects_of("statefulsets", "apps", "llm")) == 1, what="group deleted")
            assert "ScaledDown" in reasons(emu, "flash")
            router.demand[MODEL] = (40, 32)
            router.fail = True  # signals lost: the size is held and the condition says why
            await eventually(lambda: condition(emu, "flash", "ScalingActive").get("status") == "False",
                             what="ScalingActive False")
            assert condition(emu, "flash", "ScalingActive")["reason"] == "SignalsUnavailable"
            assert get(emu, "flash")["spec"]["replicas"] == 1
            assert "SignalsUnavailable" in reasons(emu, "flash")
            assert condition(emu, "flash", C.COND_READY)["status"] == "True", "reconcile kept its conditions"


async def test_pro_takes_a_supernode_from_flash_when_the_pool_is_full(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    router = FakeRouter()
    async with router.serving(), cluster.running():
        config = AutoscalerConfig(router_namespace=ROUTER_NS, router_ops_port=router.port, interval_seconds=0.2)
        async with running_operator(url, autoscaler=config), httpx.AsyncClient(base_url=url) as c:
            router.demand = {"deepseek-v4-pro": (0, 5), MODEL: (0, 40)}
            await c.post(mds(), json=md("flash", MODEL, 2, 1, 3, priority=10, pool="a3"))
            await c.post(mds(), json=md("pro", "deepseek-v4-pro", 1, 1, 3, priority=100, pool="a3"))
            await eventually(lambda: (get(emu, "flash").get("status") or {}).get("readyReplicas") == 2
                             and (get(emu, "pro").get("status") or {}).get("readyReplicas") == 1, what="3 groups")
            router.demand["deepseek-v4-pro"] = (60, 32)
            await eventually(lambda: get(emu, "pro")["spec"]["replicas"] == 2, timeout=15, what="pro grows")
            assert get(emu, "flash")["spec"]["replicas"] == 1, "the donor was scaled down first"
            await eventually(lambda: "Preempting" in reasons(emu, "pro") and "GroupPreempted" in reasons(emu, "flash"),
                             what="events on both deployments")
            await eventually(lambda: (get(emu, "pro").get("status") or {}).get("readyReplicas") == 2,
                             timeout=15, what="pro's new group on the freed supernode")
            # Pool full again, flash (lower priority) cannot take it back: it reports CapacityLimited.
            router.demand[MODEL] = (80, 32)
            await eventually(lambda: auto_status(emu, "flash").get("reason") == "CapacityLimited", what="limited")
            assert "can place 1" in auto_status(emu, "flash")["message"]
            await eventually(lambda: condition(emu, "flash", C.COND_CAPACITY_LIMITED).get("status") == "True",
                             what="CapacityLimited condition")
            assert get(emu, "flash")["spec"]["replicas"] == 1 and get(emu, "pro")["spec"]["replicas"] == 2


async def test_a_draining_group_the_routers_report_idle_is_deleted_before_the_drain_timeout(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    router = FakeRouter()
    async with router.serving(), cluster.running():
        config = AutoscalerConfig(router_namespace=ROUTER_NS, router_ops_port=router.port, interval_seconds=0.2)
        async with running_operator(url, autoscaler=config), httpx.AsyncClient(base_url=url) as c:
            router.demand[MODEL] = (0, 0)
            body = md("flash", MODEL, 2, 1, 2)
            body["spec"]["rollout"]["drainTimeoutSeconds"] = 600
            await c.post(mds(), json=body)
            await eventually(lambda: get(emu, "flash")["spec"]["replicas"] == 1, timeout=15, what="scaled down")
            await eventually(lambda: "GroupDraining" in reasons(emu, "flash"), what="group 1 draining")
            await asyncio.sleep(0.5)
            assert len(emu.objects_of("statefulsets", "apps", "llm")) == 2, "still draining: requests may be open"
            router.draining = [{"deployment": "llm/flash", "group": 1, "inFlight": 0, "engineRunning": 0,
                                "engineWaiting": 0, "scraped": True}]
            await eventually(lambda: len(emu.objects_of("statefulsets", "apps", "llm")) == 1, what="deleted")
            assert "GroupDrained" in reasons(emu, "flash")


class FakePrometheus:
    """Answers `GET /api/v1/query` (instant vectors) for the router series, from per-model (queued, inFlight);
    records the queries it was asked."""

    def __init__(self) -> None:
        self.demand: dict[str, tuple[int, int]] = {}
        self.queries: set[str] = set()
        self.fail = False
        self.port = 0

    async def query(self, request: web.Request) -> web.Response:
        if self.fail:
            return web.json_response({"status": "error", "errorType": "unavailable", "error": "down"}, status=503)
        q = request.query["query"]
        self.queries.add(q)
        column = {"queued_requests": 0, "inflight_requests": 1}
        result = []
        for model, values in self.demand.items():
            value = next((values[i] for name, i in column.items() if name in q), 0)
            result.append({"metric": {"model": model, "mode": "non-think"}, "value": [0, str(value)]})
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakePrometheus]:
        async with serve_get(self.query, "/api/v1/query") as self.port:
            yield self


async def test_signals_from_prometheus_scale_up_and_an_unreachable_prometheus_holds(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    prom = FakePrometheus()
    async with prom.serving(), cluster.running():
        config = AutoscalerConfig(router_namespace=ROUTER_NS, router_ops_port=1, interval_seconds=0.2,
                                  prometheus_url=f"http://127.0.0.1:{prom.port}",
                                  prometheus_selector='namespace="supernode-system"')
        async with running_operator(url, autoscaler=config), httpx.AsyncClient(base_url=url) as c:
            prom.demand[MODEL] = (0, 5)  # the router's ops port (1) is never asked: Prometheus is
            assert (await c.post(mds(), json=md("flash", MODEL, 1, 1, 2))).status_code == 201
            await eventually(lambda: auto_status(emu, "flash").get("reason") == "Stable", what="stable at 1")
            assert 'sum by (model, mode) (supernode_router_pool_queued_requests{namespace="supernode-system"})' \
                in prom.queries
            prom.demand[MODEL] = (40, 32)
            await eventually(lambda: get(emu, "flash")["spec"]["replicas"] == 2, what="scaled up to 2")
            await eventually(lambda: auto_status(emu, "flash").get("signals", {}).get("queued") == 40,
                             what="queued from Prometheus")
            await eventually(lambda: (get(emu, "flash").get("status") or {}).get("readyReplicas") == 2, what="2 ready")
            prom.demand.clear()  # no series at all (not scraping the routers): missing data, not zero demand
            await eventually(lambda: condition(emu, "flash", "ScalingActive").get("status") == "False",
                             what="ScalingActive False on no series")
            assert "scraping" in condition(emu, "flash", "ScalingActive")["message"]
            prom.demand[MODEL] = (40, 32)
            await eventually(lambda: condition(emu, "flash", "ScalingActive").get("status") == "True",
                             what="ScalingActive True again")
            prom.demand[MODEL] = (0, 0)
            prom.fail = True  # refusing queries: the same hold; the idle demand would have scaled down by now
            await eventually(lambda: "down" in condition(emu, "flash", "ScalingActive").get("message", ""),
                             what="the Prometheus error in the condition")
            await asyncio.sleep(2.0)  # twice the down window
            cond = condition(emu, "flash", "ScalingActive")
            assert cond["status"] == "False" and cond["reason"] == "SignalsUnavailable", cond
            assert "prometheus" in cond["message"], cond
            assert get(emu, "flash")["spec"]["replicas"] == 2, "the size is held"
