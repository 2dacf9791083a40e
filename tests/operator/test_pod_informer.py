"""PodInformer: the operator's view of every pod, from one list + watch against the test Kubernetes API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from k8s_emulator import K8sEmulator
from operator_harness import eventually

from supernode.operator.kube import KubeClient, load_access
from supernode.operator.pod_informer import NodeInformer, PodInformer


def pod(name: str, ns: str = "llm", node: str | None = "n1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "engine", "image": "x", "resources": {
                "limits": {"huawei.com/Ascend910": "16"}}}]}}


def names(informer: PodInformer) -> list[str]:
    return sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in informer.pods())


@contextlib.asynccontextmanager
async def running(informer: PodInformer) -> AsyncIterator[PodInformer]:
    task = asyncio.create_task(informer.run())
    try:
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_lists_then_follows_adds_changes_and_deletes_across_namespaces(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    await emu.put_object(pod("a"))
    client = KubeClient(load_access(url))
    try:
        async with running(PodInformer(client, watch_timeout=5, retry_seconds=0.05)) as informer:
            await asyncio.wait_for(informer.synced.wait(), 10)
            assert names(informer) == ["llm/a"]
            slim = informer.pods()[0]
            assert "image" not in slim["spec"]["containers"][0], "slimmed to what the planner reads"
            assert informer.pods() is informer.pods(), "unchanged: the same list (InventoryCache keys on it)"
            await emu.put_object(pod("b", ns="other"))
            await emu.patch_object("pods", "llm", "a", {"status": {"phase": "Running"}}, subresource="status")
            await eventually(lambda: names(informer) == ["llm/a", "other/b"], what="b added")
            await eventually(lambda: next(p for p in informer.pods() if p["metadata"]["name"] == "a")["status"][
                "phase"] == "Running", what="a's status")
            await emu.delete_object("pods", "other", "b")
            await eventually(lambda: names(informer) == ["llm/a"], what="b deleted")
            emu.close_watches()  # the server ends the stream: resumed from the last resourceVersion
            await emu.put_object(pod("c"))
            await eventually(lambda: names(informer) == ["llm/a", "llm/c"], what="c after the stream ended")
    finally:
        await client.close()


async def test_the_pod_index_follows_the_informer_and_nodes_come_the_same_way(k8s: tuple[K8sEmulator, str]) -> None:
    """Each pod change updates the PodIndex planning reads (devices held per node, the deployment's pods);
    the node informer hands out one list until a node changes."""
    emu, url = k8s
    await emu.put_object(pod("a", node="n1"))
    await emu.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"x": "1"}},
                          "status": {"allocatable": {"huawei.com/Ascend910": "16"}}})
    client = KubeClient(load_access(url))
    try:
        async with running(PodInformer(client, watch_timeout=5, retry_seconds=0.05)) as pods, \
                running(NodeInformer(client, watch_timeout=5, retry_seconds=0.05)) as nodes:
            await asyncio.wait_for(asyncio.gather(pods.synced.wait(), nodes.synced.wait()), 10)
            assert pods.index.used == {"n1": {"huawei.com/Ascend910": 16}}
            listed = nodes.nodes()
            assert [n["metadata"]["name"] for n in listed] == ["n1"] and nodes.nodes() is listed
            await emu.put_object(pod("b", node="n2"))
            await eventually(lambda: pods.index.used.get("n2") == {"huawei.com/Ascend910": 16}, what="b counted")
            await emu.delete_object("pods", "llm", "a")
            await eventually(lambda: "n1" not in pods.index.used, what="a's devices freed")
            await emu.patch_object("nodes", None, "n1", {"metadata": {"labels": {"x": "2"}}})
            await eventually(lambda: nodes.nodes()[0]["metadata"]["labels"]["x"] == "2", what="n1 relabelled")
            assert nodes.nodes() is not listed
    finally:
        await client.close()


class ExpiringClient:
    """A client whose first watch answers 410 Gone (the resourceVersion is too old), as an API server does
    after a long disconnect: the informer must list again and see what changed meanwhile."""

    def __init__(self) -> None:
        self.lists = 0

    async def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return ([pod("a")] if self.lists == 1 else [pod("b")]), str(self.lists)

    async def watch_pods(self, resource_version: str, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        if self.lists == 1:
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}
            return
        await asyncio.Event().wait()  # then a quiet stream
        yield {}


async def test_an_expired_watch_relists() -> None:
    client = ExpiringClient()
    async with running(PodInformer(client, retry_seconds=0.01)) as informer:  # type: ignore[arg-type]
        await eventually(lambda: client.lists == 2, what="a second list")
        assert names(informer) == ["llm/b"], "the relist replaces what was known"
