"""Kubernetes discovery's informer core: the pure cache (event sequences) and the list/watch loop
against a scripted client (410 → relist, stream end → resume, errors → back-off and relist)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from supernode.router.discovery.kube_cache import Expired, ResourceCache, WatchError
from supernode.router.discovery.kube_client import KubeResource
from supernode.router.discovery.kube_informer import Backoff, Informer

PODS = KubeResource("", "v1", "pods", label_selector="supernode.io/role=leader")


def obj(name: str, rv: int, ns: str = "llm", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv), "labels": labels}}


def event(kind: str, o: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": o}


def gone(rv: int) -> dict[str, Any]:
    return event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": f"too old: {rv}"})


def test_list_then_events_track_objects_and_resource_version() -> None:
    c = ResourceCache()
    assert c.replace([obj("a", 1), obj("b", 2)], "5") and c.synced and c.resource_version == "5"
    assert c.apply(event("ADDED", obj("c", 6)))
    assert c.apply(event("MODIFIED", obj("a", 7, x="y")))
    assert c.apply(event("DELETED", obj("b", 8)))
    assert [o["metadata"]["name"] for o in c.items()] == ["a", "c"]
    assert c.objects[("llm", "a")]["metadata"]["labels"] == {"x": "y"} and c.resource_version == "8"


def test_bookmark_moves_the_resume_point_only() -> None:
    c = ResourceCache()
    c.replace([obj("a", 1)], "3")
    assert not c.apply(event("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "40"}}))
    assert c.resource_version == "40" and list(c.objects) == [("llm", "a")]


def test_repeats_and_unknown_deletes_are_not_changes() -> None:
    c = ResourceCache()
    c.replace([obj("a", 1)], "1")
    assert not c.apply(event("MODIFIED", obj("a", 1)))  # same object again (e.g. replayed)
    assert not c.apply(event("DELETED", obj("zz", 2)))
    assert not c.replace([obj("a", 1)], "9") and c.resource_version == "9"
    assert c.replace([], "10") and c.items() == []


def test_same_name_in_two_namespaces_are_two_objects() -> None:
    c = ResourceCache()
    c.replace([obj("a", 1, ns="x"), obj("a", 2, ns="y")], "2")
    c.apply(event("DELETED", obj("a", 3, ns="x")))
    assert list(c.objects) == [("y", "a")]


def test_410_raises_expired_and_other_errors_raise_watch_error() -> None:
    c = ResourceCache()
    c.replace([], "1")
    with pytest.raises(Expired):
        c.apply(gone(1))
    with pytest.raises(WatchError, match="500"):
        c.apply(event("ERROR", {"code": 500, "reason": "InternalError", "message": "boom"}))
    with pytest.raises(WatchError, match="unknown"):
        c.apply(event("WHAT", obj("a", 2)))
    with pytest.raises(WatchError, match=r"metadata\.name"):
        c.apply(event("ADDED", {"metadata": {}}))


class ScriptedClient:
    """Answers LIST and WATCH from scripts; records every call."""

    def __init__(self, lists: list[Any], watches: list[list[Any]]):
        self.lists, self.watches = lists, watches
        self.calls: list[tuple[str, str]] = []

    async def list(self, resource: KubeResource, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", ""))
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    async def watch(self, resource: KubeResource, namespace: str | None, resource_version: str,
                    timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", resource_version))
        if not self.watches:
            await asyncio.sleep(timeout_s)  # an idle stream the server ends at its timeout
            return
        for item in self.watches.pop(0):
            if isinstance(item, Exception):
                raise item
            yield item


async def run_until(informer: Informer, client: ScriptedClient, n_calls: int) -> None:
    task = asyncio.create_task(informer.run())
    try:
        for _ in range(500):
            if len(client.calls) >= n_calls and not client.watches:
                break
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_informer_resumes_after_stream_end_and_relists_on_410() -> None:
    client = ScriptedClient(
        lists=[([obj("a", 1)], "1"), ([obj("a", 1), obj("c", 9)], "9")],
        watches=[[event("ADDED", obj("b", 2))],  # the server ends this stream: resume from rv 2
                 [event("BOOKMARK", {"metadata": {"resourceVersion": "5"}}), gone(5)],  # 410: relist
                 ])
    changes: list[int] = []
    inf = Informer(client, PODS, "llm", lambda: changes.append(1), backoff=Backoff(0.001, 0.01))  # type: ignore[arg-type]
    await run_until(inf, client, 5)
    assert client.calls[:5] == [("list", ""), ("watch", "1"), ("watch", "2"), ("list", ""), ("watch", "9")]
    assert [o["metadata"]["name"] for o in inf.cache.items()] == ["a", "c"]  # b vanished while expired
    assert inf.stats.expired == 1 and len(changes) == 3  # first list, ADDED b, relist


async def test_informer_keeps_objects_through_errors_and_backs_off() -> None:
    client = ScriptedClient(
        lists=[([obj("a", 1)], "1"), OSError("connection refused"), ([obj("a", 1)], "4")],
        watches=[[event("MODIFIED", obj("a", 3)), ConnectionResetError("dropped")]])
    changes: list[int] = []
    inf = Informer(client, PODS, None, lambda: changes.append(1), backoff=Backoff(0.001, 0.01))  # type: ignore[arg-type]
    await run_until(inf, client, 5)
    assert [c[0] for c in client.calls[:5]] == ["list", "watch", "list", "list", "watch"]
    assert client.calls[4] == ("watch", "4") and inf.stats.errors == 2 and inf.last_error is None
    assert list(inf.cache.objects) == [("llm", "a")] and len(changes) == 3  # list, MODIFIED, relist (rv differs)


async def test_informer_relists_when_resync_is_due() -> None:
    client = ScriptedClient(lists=[([], "1"), ([obj("a", 2)], "2")] + [([obj("a", 2)], "2")] * 50, watches=[])
    inf = Informer(client, PODS, None, lambda: None, resync_s=0.03, watch_timeout_s=0.01,  # type: ignore[arg-type]
                   backoff=Backoff(0.001, 0.01))
    await run_until(inf, client, 8)
    assert client.calls[:3] == [("list", ""), ("watch", "1"), ("watch", "1")]  # resumed after the server timeout
    assert ("list", "") in client.calls[3:]
    assert inf.stats.lists >= 2 and list(inf.cache.objects) == [("llm", "a")]


def test_backoff_grows_to_its_cap_and_resets() -> None:
    b = Backoff(0.1, 1.0)
    delays = [b.next() for _ in range(6)]
    assert delays[0] <= 0.1 and 0.8 <= delays[-1] <= 1.0 and delays[2] > delays[0]
    b.reset()
    assert b.next() <= 0.1


async def test_missing_api_settings_are_reported_not_fatal(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from supernode.router.discovery.kubernetes import KubernetesDiscovery

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope"))
    d = KubernetesDiscovery(lambda eps: None, namespace=None, port_name="http", default_port=8000,
                            default_max_concurrency=8)
    task = asyncio.create_task(d.run())
    try:
        for _ in range(200):
            if d.last_error:
                break
            await asyncio.sleep(0.01)
        assert d.last_error and "kubernetes API settings" in d.last_error and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
