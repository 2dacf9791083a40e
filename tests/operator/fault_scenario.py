"""A device fault under a running group, end to end on 127.0.0.1: the test Kubernetes API, the fake kubelet,
the real kopf operator, and the router's real Kubernetes discovery reading what the operator writes.
Shared by tests/operator/test_operator_device_faults.py and benchmarks/device_fault.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import fake_lws
import httpx
from ascend_reports import AscendReport
from builders import operator_md
from fake_cluster import MD_KIND, FakeCluster, node
from k8s_emulator import K8sEmulator
from operator_harness import running_operator

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.router.discovery.kubernetes import KubernetesDiscovery

NS = "llm"
MDS = f"/apis/{C.GROUP}/{C.VERSION}/namespaces/{NS}/{C.PLURAL}"


def ascend_md(name: str = "v4", replicas: int = 2) -> dict[str, Any]:
    return (operator_md(name).engine("vllm").accelerator("ascend-910c", 16)
            .parallelism(tensor=16, data=2, expert=32).placement(supernode="Required", spread=True)
            .replicas(replicas).dict())


class FaultScenario:
    """`superpods` SuperPoDs of two 16-chip nodes; a ModelDeployment of 2-pod groups, one per SuperPoD."""

    def __init__(self, emu: K8sEmulator, url: str, *, superpods: int = 3, resync: float = 2.0, lws: bool = False,
                 **operator: Any) -> None:
        """`lws`: the LeaderWorkerSet CRD is installed and fake_lws runs its controller (the operator renders
        LeaderWorkerSets instead of StatefulSets)."""
        self.emu, self.url, self.superpods, self.resync, self.operator = emu, url, superpods, resync, operator
        self.lws = lws
        self.published: list[tuple[float, list[Endpoint]]] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> FaultScenario:
        self.emu.declare(MD_KIND, shortnames=["md"])
        cluster = self.cluster = FakeCluster(self.emu)
        if self.lws:
            await fake_lws.install(self.emu)
            cluster.controllers.append(fake_lws.FakeLws(self.emu, cluster.started).step)
        for sp in range(self.superpods):
            await cluster.add_nodes(*(node(f"sp{sp}-n{i}", f"sp-{sp}") for i in range(2)))
        await self._stack.enter_async_context(cluster.running())
        await self._stack.enter_async_context(running_operator(self.url, resync=self.resync, **self.operator))
        self.http = await self._stack.enter_async_context(httpx.AsyncClient(base_url=self.url))
        discovery = KubernetesDiscovery(lambda eps: self.published.append((time.monotonic(), eps)), namespace=NS,
                                        port_name="http", default_port=8000, default_max_concurrency=32,
                                        api_url=self.url, debounce_s=0.01)
        task = asyncio.create_task(discovery.run())

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop)
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
                        ) -> None:
        await self._stack.aclose()

    async def apply(self, body: dict[str, Any]) -> None:
        response = await self.http.post(MDS, json=body)
        assert response.status_code == 201, response.text

    async def serving(self, body: dict[str, Any]) -> None:
        """Apply a ModelDeployment and wait until all its groups are ready and routed to."""
        await self.apply(body)
        groups = set(range(body["spec"]["replicas"]))
        await self.until(lambda: self.status(body["metadata"]["name"]).get("readyReplicas") == len(groups)
                         and self.routable() == groups, timeout=4 * self.resync + 10, what="all groups serving")

    def status(self, name: str = "v4") -> dict[str, Any]:
        return (self.emu.get(C.PLURAL, NS, name, C.GROUP) or {}).get("status", {})

    def groups(self, name: str = "v4") -> dict[str, dict[str, Any]]:
        """Workloads by group index."""
        plural, group = ("leaderworkersets", "leaderworkerset.x-k8s.io") if self.lws else ("statefulsets", "apps")
        sts = self.emu.objects_of(plural, group, NS, f"{C.LABEL_DEPLOYMENT}={name}")
        return {s["metadata"]["labels"][C.LABEL_GROUP]: s for s in sts}

    def pods(self, group: str, name: str = "v4") -> list[dict[str, Any]]:
        return sorted(self.emu.objects_of("pods", "", NS, f"{C.LABEL_DEPLOYMENT}={name},{C.LABEL_GROUP}={group}"),
                      key=lambda p: p["metadata"]["name"])

    def routable(self) -> set[int]:
        """Groups the router would pick now (ready, not draining), from what discovery last published."""
        eps = self.published[-1][1] if self.published else []
        return {e.group for e in eps if e.ready and not e.draining}

    async def report(self, report: AscendReport) -> float:
        """Write the device plugin's ConfigMap for a node (create or replace); returns when (monotonic)."""
        cm = report.configmap()
        name = cm["metadata"]["name"]
        path = f"/api/v1/namespaces/{C.ASCEND_DEVICE_INFO_NAMESPACE}/configmaps"
        if self.emu.get("configmaps", C.ASCEND_DEVICE_INFO_NAMESPACE, name) is None:
            response = await self.http.post(path, json=cm)
        else:
            response = await self.http.put(f"{path}/{name}", json=cm)
        assert response.status_code in (200, 201), response.text
        return time.monotonic()

    async def until(self, check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> float:
        """Monotonic time `check` first held (polled every 5 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(KeyError, IndexError, TypeError, StopIteration):
                if check():
                    return time.monotonic()
            await asyncio.sleep(0.005)
        raise AssertionError(f"timed out waiting for {what}")
