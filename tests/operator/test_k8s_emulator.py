"""The test Kubernetes API behaves like kube-apiserver where the operator relies on it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from k8s_emulator import LWS_KIND, K8sEmulator
from label_selectors import matches_selector

PODS = "/api/v1/namespaces/ns/pods"


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {"x": 1}}


async def test_create_stamps_server_fields_and_answers_201(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post(PODS, json=pod("a"))
        assert r.status_code == 201
        meta = r.json()["metadata"]
        assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
        assert meta["namespace"] == "ns"
        r2 = await c.post(PODS, json=pod("b"))
        assert int(r2.json()["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
        assert (await c.post(PODS, json=pod("a"))).status_code == 409


async def test_generate_name_and_put(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        body = pod("")
        body["metadata"] = {"generateName": "x-"}
        r = await c.post(PODS, json=body)
        name = r.json()["metadata"]["name"]
        assert name.startswith("x-") and len(name) > 2
        obj = r.json()
        obj["spec"] = {"x": 2}
        r = await c.put(f"{PODS}/{name}", json=obj)
        assert r.status_code == 200 and r.json()["metadata"]["generation"] == 2


async def test_stale_resource_version_is_409_and_failed_patch_test_is_422(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        rv = (await c.post(PODS, json=pod("a"))).json()["metadata"]["resourceVersion"]
        await c.patch(f"{PODS}/a", json={"metadata": {"labels": {"x": "y"}}},
                      headers={"Content-Type": "application/merge-patch+json"})
        stale = await c.patch(f"{PODS}/a", json={"metadata": {"resourceVersion": rv, "labels": {"x": "z"}}},
                              headers={"Content-Type": "application/merge-patch+json"})
        assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
        bad = await c.patch(f"{PODS}/a", content=json.dumps([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]),
            headers={"Content-Type": "application/json-patch+json"})
        assert bad.status_code == 422
        current = (await c.get(f"{PODS}/a")).json()["metadata"]["resourceVersion"]
        good = await c.patch(f"{PODS}/a", content=json.dumps([
            {"op": "test", "path": "/metadata/resourceVersion", "value": current},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]),
            headers={"Content-Type": "application/json-patch+json"})
        assert good.status_code == 200 and good.json()["metadata"]["finalizers"] == ["f"]


async def test_generation_bumps_on_spec_only_and_noop_keeps_resource_version(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    h = {"Content-Type": "application/merge-patch+json"}
    async with httpx.AsyncClient(base_url=url) as c:
        await c.post(PODS, json=pod("a"))
        r = await c.patch(f"{PODS}/a", json={"metadata": {"labels": {"k": "v"}}}, headers=h)
        assert r.json()["metadata"]["generation"] == 1
        r = await c.patch(f"{PODS}/a", json={"spec": {"x": 5}}, headers=h)
        assert r.json()["metadata"]["generation"] == 2
        rv = r.json()["metadata"]["resourceVersion"]
        r = await c.patch(f"{PODS}/a", json={"spec": {"x": 5}}, headers=h)
        assert r.json()["metadata"]["resourceVersion"] == rv


async def test_status_subresource_is_separate(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    h = {"Content-Type": "application/merge-patch+json"}
    async with httpx.AsyncClient(base_url=url) as c:
        await c.post(PODS, json=pod("a"))
        r = await c.patch(f"{PODS}/a", json={"status": {"phase": "Running"}, "spec": {"x": 9}}, headers=h)
        assert "status" not in r.json() and r.json()["spec"]["x"] == 9
        r = await c.patch(f"{PODS}/a/status", json={"status": {"phase": "Running"}, "spec": {"x": 7}}, headers=h)
        assert r.json()["status"] == {"phase": "Running"} and r.json()["spec"]["x"] == 9
        assert r.json()["metadata"]["generation"] == 2


async def test_scale_subresource(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    emu.declare(LWS_KIND)
    path = "/apis/apps/v1/namespaces/ns/statefulsets"
    async with httpx.AsyncClient(base_url=url) as c:
        await c.post(path, json={"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
                                 "spec": {"replicas": 2}})
        scale = (await c.get(f"{path}/s/scale")).json()
        assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
        r = await c.patch(f"{path}/s/scale", json={"spec": {"replicas": 5}},
                          headers={"Content-Type": "application/merge-patch+json"})
        assert r.json()["spec"]["replicas"] == 5
        assert (await c.get(f"{path}/s")).json()["spec"]["replicas"] == 5


async def test_label_selectors_on_list() -> None:
    assert matches_selector({"a": "1", "b": "2"}, "a=1,b in (2,3),!c")
    assert not matches_selector({"a": "1"}, "a!=1")
    assert not matches_selector({"a": "1"}, "b")
    assert matches_selector({"a": "1"}, "a notin (2, 3)")


async def test_list_filters_by_label_selector(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        await c.post(PODS, json=pod("a", app="x"))
        await c.post(PODS, json=pod("b", app="y"))
        r = await c.get(PODS, params={"labelSelector": "app=x"})
        assert [i["metadata"]["name"] for i in r.json()["items"]] == ["a"]
        assert r.json()["metadata"]["resourceVersion"]


async def test_watch_replays_from_resource_version_and_streams_new_events(k8s: tuple[K8sEmulator, str]) -> None:
    _, url = k8s
    async with httpx.AsyncClient(base_url=url, timeout=5) as c:
        rv = (await c.post(PODS, json=pod("a"))).json()["metadata"]["resourceVersion"]
        await c.post(PODS, json=pod("b"))
        events: list[tuple[str, str]] = []
        async with c.stream("GET", PODS, params={"watch": "true", "resourceVersion": rv,
                                                 "timeoutSeconds": "1"}) as resp:
            await c.delete(f"{PODS}/a")
            async for line in resp.aiter_lines():
                if line:
                    e = json.loads(line)
                    events.append((e["type"], e["object"]["metadata"]["name"]))
        assert events == [("ADDED", "b"), ("DELETED", "a")]


async def test_owner_reference_garbage_collection(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        owner = (await c.post(PODS, json=pod("owner"))).json()
        ref = {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner["metadata"]["uid"]}
        for name in ("c1", "c2"):
            child = pod(name)
            child["metadata"]["ownerReferences"] = [ref]
            await c.post(PODS, json=child)
        grandchild = pod("g")
        c1 = emu.get("pods", "ns", "c1")
        assert c1 is not None
        grandchild["metadata"]["ownerReferences"] = [{**ref, "name": "c1", "uid": c1["metadata"]["uid"]}]
        await c.post(PODS, json=grandchild)
        await c.request("DELETE", f"{PODS}/owner", json={"propagationPolicy": "Foreground"})
        assert emu.objects_of("pods") == []


async def test_orphan_policy_keeps_dependents(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        owner = (await c.post(PODS, json=pod("owner"))).json()
        child = pod("c")
        child["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "owner",
                                                 "uid": owner["metadata"]["uid"]}]
        await c.post(PODS, json=child)
        await c.delete(f"{PODS}/owner", params={"propagationPolicy": "Orphan"})
        (left,) = emu.objects_of("pods")
        assert left["metadata"]["name"] == "c" and left["metadata"]["ownerReferences"] == []


async def test_finalizers_hold_deletion_until_removed(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        body = pod("a")
        body["metadata"]["finalizers"] = ["f"]
        await c.post(PODS, json=body)
        r = await c.delete(f"{PODS}/a")
        assert r.json()["metadata"]["deletionTimestamp"]
        assert emu.get("pods", "ns", "a") is not None
        await c.patch(f"{PODS}/a", json={"metadata": {"finalizers": None}},
                      headers={"Content-Type": "application/merge-patch+json"})
        assert emu.get("pods", "ns", "a") is None


async def test_delete_collection_and_version(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        await c.post(PODS, json=pod("a", app="x"))
        await c.post(PODS, json=pod("b", app="y"))
        await c.delete(PODS, params={"labelSelector": "app=x"})
        assert [p["metadata"]["name"] for p in emu.objects_of("pods")] == ["b"]
        for path in ("/version", "/version/"):
            assert (await c.get(path)).json()["major"] == "1"
        assert (await c.get(f"{PODS}/zzz")).status_code == 404
        assert emu.writes()[-1].startswith("DELETE")


@pytest.mark.parametrize("path", ["/api/v1", "/apis/apps/v1"])
async def test_discovery_lists_declared_resources(k8s: tuple[K8sEmulator, str], path: str) -> None:
    _, url = k8s
    async with httpx.AsyncClient(base_url=url) as c:
        names = {r["name"] for r in (await c.get(path)).json()["resources"]}
    assert ("pods/status" in names) if path == "/api/v1" else ("statefulsets/scale" in names)


async def test_watch_subscribes_before_snapshot(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    async with httpx.AsyncClient(base_url=url, timeout=5) as c:
        names: list[str] = []

        async def watch() -> None:
            async with c.stream("GET", PODS, params={"watch": "true", "timeoutSeconds": "1"}) as resp:
                async for line in resp.aiter_lines():
                    if line:
                        names.append(json.loads(line)["object"]["metadata"]["name"])

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.1)
        await emu.put_object({**pod("late"), "metadata": {"name": "late", "namespace": "ns"}})
        await task
        assert names == ["late"]
