"""PodInformer: the operator's view of every pod, from one list + watch against the test Kubernetes API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from k8s_emulator import K8sEmulator
from operator_harness import eventually

from supernode.operator.kube import KubeClient, load_access
from supernode.operator.pod_informer import PodInformer


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
