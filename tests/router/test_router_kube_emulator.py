"""Kubernetes discovery end to end against the Kubernetes API emulator (tests/operator/k8s_emulator.py)
on 127.0.0.1: real HTTP list + watch, changes applied within a second, recovery after 410 and after the
API server goes away and comes back."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from k8s_emulator import K8sEmulator, Kind

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.router.discovery.kubernetes import KubernetesDiscovery

NS = "llm"
MD_KIND = Kind(C.GROUP, C.VERSION, C.PLURAL, C.KIND)


def leader_pod(name: str, deployment: str = "v4-flash", ip: str = "10.0.0.5") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {C.LABEL_ROLE: C.ROLE_LEADER,
                                                                  C.LABEL_DEPLOYMENT: deployment, C.LABEL_GROUP: "0"}},
            "spec": {"containers": [{"name": "engine", "ports": [{"name": "http", "containerPort": 8100}]}]}}


def pod_status(ip: str) -> dict[str, Any]:
    return {"status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


def model_deployment(name: str = "v4-flash") -> dict[str, Any]:
    return {"apiVersion": C.API_VERSION, "kind": C.KIND, "metadata": {"name": name, "namespace": NS},
            "spec": {"model": {"name": "deepseek-v4-flash"}, "modes": ["non-think", "think-high"]}}


def capacity_limited(on: bool) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": C.COND_CAPACITY_LIMITED, "status": "True" if on else "False"}]}}


class Harness:
    def __init__(self, emu: K8sEmulator, discovery: KubernetesDiscovery, seen: list[list[Endpoint]]):
        self.emu, self.discovery, self.seen = emu, discovery, seen

    async def until(self, check: Callable[[list[Endpoint]], bool], what: str, within_s: float = 1.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < within_s:
            if self.seen and check(self.seen[-1]):
                return time.monotonic() - start
            await asyncio.sleep(0.01)
        raise AssertionError(f"{what}: not seen within {within_s}s; last endpoints {self.seen[-1:] }")


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[K8sEmulator, kmock.Server, Harness]]:
    async with K8sEmulator(strict=False) as emu, kmock.Server(emu) as srv:
        emu.declare(MD_KIND)
        seen: list[list[Endpoint]] = []
        d = KubernetesDiscovery(seen.append, namespace=NS, port_name="http", default_port=8000,
                                default_max_concurrency=8, api_url=str(srv.url).rstrip("/"), debounce_s=0.02,
                                watch_timeout_s=30)
        task = asyncio.create_task(d.run())
        try:
            yield emu, srv, Harness(emu, d, seen)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            emu.close_watches()


async def test_pod_and_deployment_changes_reach_the_endpoints_within_a_second(
        cluster: tuple[K8sEmulator, kmock.Server, Harness]) -> None:
    emu, _, h = cluster
    await h.until(lambda eps: eps == [], "initial empty list")
    await emu.put_object(model_deployment())
    await emu.put_object(leader_pod("p0"))
    await emu.put_object({**leader_pod("w1"), "metadata": {**leader_pod("w1")["metadata"], "labels": {
        C.LABEL_ROLE: "worker", C.LABEL_DEPLOYMENT: "v4-flash"}}})  # not selected: never an endpoint
    await emu.patch_object("pods", NS, "p0", pod_status("10.0.0.5"), subresource="status")
    took = await h.until(lambda eps: [e.url for e in eps] == ["http://10.0.0.5:8100"], "endpoint appears")
    ep = h.seen[-1][0]
    assert ep.ready and not ep.draining and [m.value for m in ep.modes] == ["non-think", "think-high"]
    assert took < 1.0

    await emu.patch_object("pods", NS, "p0", {"metadata": {"annotations": {C.ANNOTATION_DRAINING: "true"}}})
    await h.until(lambda eps: len(eps) == 1 and eps[0].draining, "endpoint draining")

    await emu.patch_object(C.PLURAL, NS, "v4-flash", capacity_limited(True), group=C.GROUP, subresource="status")
    await h.until(lambda eps: len(eps) == 1 and eps[0].capacity_limited, "capacity limited flagged")

    await emu.delete_object("pods", NS, "p0")
    await h.until(lambda eps: eps == [], "endpoint gone")
    stats = h.discovery.pods.stats if h.discovery.pods else None
    assert stats is not None and stats.lists == 1 and stats.events >= 3  # watched, never relisted


async def test_expired_resource_version_relists(cluster: tuple[K8sEmulator, kmock.Server, Harness]) -> None:
    emu, _, h = cluster
    await emu.put_object(model_deployment())
    await emu.put_object(leader_pod("p0"))
    await emu.patch_object("pods", NS, "p0", pod_status("10.0.0.5"), subresource="status")
    await h.until(lambda eps: len(eps) == 1, "endpoint appears")
    # The API compacts its history past our resourceVersion, then ends the streams: resuming gets 410.
    emu.history.clear()
    emu.rv += 10
    emu.close_watches()
    assert h.discovery.pods is not None
    for _ in range(100):
        if h.discovery.pods.stats.expired and h.discovery.pods.stats.lists >= 2:
            break
        await asyncio.sleep(0.01)
    assert h.discovery.pods.stats.expired >= 1 and h.discovery.pods.stats.lists >= 2
    await emu.patch_object("pods", NS, "p0", {"metadata": {"annotations": {C.ANNOTATION_DRAINING: "true"}}})
    await h.until(lambda eps: len(eps) == 1 and eps[0].draining, "watching again after the relist")


async def test_api_server_outage_keeps_endpoints_and_recovers() -> None:
    async with K8sEmulator(strict=False) as emu:
        emu.declare(MD_KIND)
        await emu.put_object(model_deployment())
        await emu.put_object(leader_pod("p0"))
        await emu.patch_object("pods", NS, "p0", pod_status("10.0.0.5"), subresource="status")
        seen: list[list[Endpoint]] = []
        async with kmock.Server(emu) as srv:
            port = srv.port
            # watch_timeout_s=1: a watch that reconnects while this server shuts down ends within 1 s
            d = KubernetesDiscovery(seen.append, namespace=None, port_name="http", default_port=8000,
                                    default_max_concurrency=8, api_url=str(srv.url).rstrip("/"), debounce_s=0.02,
                                    watch_timeout_s=1)
            task = asyncio.create_task(d.run())
            h = Harness(emu, d, seen)
            await h.until(lambda eps: len(eps) == 1, "endpoint appears")
            emu.close_watches()
        # The API is gone: changes made meanwhile cannot be seen, the last endpoints stay.
        try:
            await emu.put_object(leader_pod("p1", ip="10.0.0.6"))
            await emu.patch_object("pods", NS, "p1", pod_status("10.0.0.6"), subresource="status")
            await asyncio.sleep(0.3)
            assert [e.url for e in seen[-1]] == ["http://10.0.0.5:8100"] and d.last_error
            async with kmock.Server(emu, port=port):
                try:
                    await h.until(lambda eps: len(eps) == 2, "both endpoints after the API is back", within_s=12.0)
                    for _ in range(300):  # the other informer may still be in its back-off
                        if d.last_error is None:
                            break
                        await asyncio.sleep(0.02)
                    assert d.last_error is None
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    emu.close_watches()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

async def test_router_app_serves_endpoints_discovered_from_the_api(stack: Any) -> None:
    """The app's lifespan owns the discovery: a request is routed to an engine found only through the
    emulated API (leader pod at 127.0.0.1:<engine port>), metrics count the watch, shutdown stops it."""
    engine_url = await stack.engine("e0")
    port = int(engine_url.rsplit(":", 1)[1])
    async with K8sEmulator(strict=False) as emu, kmock.Server(emu) as srv:
        emu.declare(MD_KIND)
        await emu.put_object(model_deployment())
        pod = leader_pod("p0")
        pod["spec"]["containers"][0]["ports"][0]["containerPort"] = port
        await emu.put_object(pod)
        router = await stack.router({"discovery": {"type": "kubernetes", "path": None, "namespace": NS,
                                                   "api_url": str(srv.url).rstrip("/"), "debounce_s": 0.02}})
        async with httpx.AsyncClient(base_url=router, timeout=5) as c:
            body = {"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            await emu.patch_object("pods", NS, "p0", pod_status("127.0.0.1"), subresource="status")
            for _ in range(100):
                if (await c.get("/v1/models")).json()["data"]:
                    break
                await asyncio.sleep(0.02)
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            metrics = (await c.get(f"{stack.metrics_url}/metrics")).text
            assert 'supernode_router_discovery_lists_total{reason="initial",resource="pods"} 1.0' in metrics
            assert 'supernode_router_discovery_watch_events_total{resource="pods",type="MODIFIED"}' in metrics
            await emu.delete_object("pods", NS, "p0")
            for _ in range(100):
                if not (await c.get("/v1/models")).json()["data"]:
                    break
                await asyncio.sleep(0.02)
            assert (await c.get("/v1/models")).json()["data"] == []
        state = stack.router_app.state.router
        await stack.close()
        assert all(t.done() for t in state.tasks)
        emu.close_watches()


async def test_worker_pods_bring_the_publishers_of_the_ranks_they_run(
        cluster: tuple[K8sEmulator, kmock.Server, Harness]) -> None:
    # DP 2 over two pods: rank 1 publishes from the worker pod, which discovery now watches too.
    from tests.router.test_router_dp_pods_discovery import group_pods, spread
    emu, _, h = cluster
    await h.until(lambda eps: eps == [], "initial empty list")
    leader, worker = group_pods(spread(tensor=8, data=2), lws=True, ready=(True, False))
    for pod in (leader, worker):
        await emu.put_object({"apiVersion": "v1", "kind": "Pod", **{k: v for k, v in pod.items() if k != "status"}})
        await emu.patch_object("pods", "llm", pod["metadata"]["name"], {"status": pod["status"]},
                               subresource="status")
    await h.until(lambda eps: len(eps) == 1 and eps[0].rank_kv_events == ["tcp://10.0.0.10:6000", ""],
                  "rank 1 unknown while its pod is not ready")
    await emu.patch_object("pods", "llm", worker["metadata"]["name"], {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}}, subresource="status")
    await h.until(lambda eps: len(eps) == 1 and eps[0].rank_kv_events == ["tcp://10.0.0.10:6000",
                                                                          "tcp://10.0.0.11:6001"], "rank 1 on its pod")
