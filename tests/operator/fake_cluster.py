"""What a real cluster's controllers would do, acting directly on the emulator's store (no HTTP, so
request counts measure the operator alone): a StatefulSet controller + scheduler + kubelet that
creates each StatefulSet's pods on the nodes of its affinity and marks them Running/Ready; nodes;
further controllers plugged in (fake_lws.py: LeaderWorkerSets)."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from k8s_emulator import K8sEmulator, Kind

from supernode.api import constants as C

MD_KIND = Kind(C.GROUP, C.VERSION, C.PLURAL, C.KIND, scale=True)
POD_INDEX = "apps.kubernetes.io/pod-index"


def node(name: str, superpod: str | None, devices: int = 16, resource: str = C.RESOURCE_ASCEND,
         ready: bool = True, superpod_label: str = C.NODE_LABEL_ASCEND_SUPERPOD) -> dict[str, Any]:
    labels = {C.NODE_LABEL_HOSTNAME: name}
    if superpod:
        labels[superpod_label] = superpod
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {}, "status": {"allocatable": {resource: str(devices), "cpu": "64"},
                                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod_ip(ns: str, name: str) -> str:
    """A stable address per pod (router discovery needs one to publish an endpoint)."""
    h = zlib.crc32(f"{ns}/{name}".encode())
    return f"10.{h >> 16 & 255}.{h >> 8 & 255}.{h & 255}"


def _nodes_of(sts: dict[str, Any], node_labels: dict[str, dict[str, str]]) -> list[str] | None:
    """Like the scheduler: the nodes satisfying every `In` expression of the required node affinity, in the
    order of its hostname list (None: no affinity, any node). A key no node carries matches nothing."""
    terms = sts["spec"]["template"]["spec"].get("affinity", {}).get("nodeAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    if not terms:
        return None
    exprs = [e for term in terms for e in term["matchExpressions"]]
    hosts = next((list(e["values"]) for e in exprs if e["key"] == C.NODE_LABEL_HOSTNAME), sorted(node_labels))
    return [h for h in hosts if h in node_labels
            and all(node_labels[h].get(e["key"]) in e["values"] for e in exprs if e["operator"] == "In")]


class FakeCluster:
    def __init__(self, emu: K8sEmulator, *, ready: bool = True) -> None:
        self.emu = emu
        self.ready = ready  # new pods become Ready at once
        self.pods_created = 0
        self.unschedulable = 0  # pods created that no node could take (their affinity matched none)
        # More controllers run after the StatefulSet one, each step (fake_lws.FakeLws.step).
        self.controllers: list[Callable[[], Awaitable[None]]] = []

    async def add_nodes(self, *nodes: dict[str, Any]) -> None:
        for n in nodes:  # like a kubelet: register, then report status
            await self.emu.put_object(n)
            await self.emu.patch_object("nodes", None, n["metadata"]["name"], {"status": n["status"]},
                                        subresource="status")

    async def step(self) -> None:
        have = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in self.emu.objects_of("pods", copy_=False)}
        node_labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {}
                       for n in self.emu.objects_of("nodes", copy_=False)}
        for sts in self.emu.objects_of("statefulsets", "apps", copy_=False):
            meta = sts["metadata"]
            name, ns = meta["name"], meta["namespace"]
            want = sts["spec"]["replicas"]
            nodes = _nodes_of(sts, node_labels)
            for i in range(want):
                pod_name = f"{name}-{i}"
                if (ns, pod_name) in have:
                    continue
                template = sts["spec"]["template"]
                labels = {**template["metadata"]["labels"], POD_INDEX: str(i)}
                container = template["spec"]["containers"][0]
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                         "name": name, "uid": meta["uid"], "controller": True}]},
                       "spec": {"nodeName": nodes[i % len(nodes)] if nodes else None,
                                "containers": [{"name": "engine", "resources": container.get("resources", {}),
                                                "ports": container.get("ports", [])}]}}
                await self.emu.put_object(pod)
                self.pods_created += 1
                if nodes == []:  # no node satisfies the affinity: Pending, unschedulable
                    self.unschedulable += 1
                    await self.emu.patch_object("pods", ns, pod_name, {"status": {"phase": "Pending", "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}},
                        subresource="status")
                elif self.ready:
                    await self.set_pod(ns, pod_name, ready=True)
        for controller in self.controllers:
            await controller()

    async def started(self, ns: str, name: str) -> None:
        """A scheduled pod a controller created: Running, and Ready when new pods become Ready at once."""
        if self.ready:
            await self.set_pod(ns, name, ready=True)

    async def set_pod(self, ns: str, name: str, *, ready: bool, crash: bool = False) -> None:
        status: dict[str, Any] = {"phase": "Running", "podIP": pod_ip(ns, name), "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]}
        if crash:
            status["containerStatuses"] = [{"name": "engine", "restartCount": 3, "ready": False,
                                            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
        await self.emu.patch_object("pods", ns, name, {"status": status}, subresource="status")

    @contextlib.asynccontextmanager
    async def running(self, period: float = 0.05) -> AsyncIterator[FakeCluster]:
        async def loop() -> None:
            while True:
                await self.step()
                await asyncio.sleep(period)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
