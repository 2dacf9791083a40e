"""The shared Kubernetes REST client (supernode.kube): access settings, and every verb against the
Kubernetes API emulator on 127.0.0.1 (the one the operator and router discovery tests use)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import kmock
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from k8s_emulator import K8sEmulator

from supernode.kube import access as A
from supernode.kube.client import ApiError, KubeRest, Resource

CM = Resource("", "v1", "services", "Service")  # a kind the emulator declares
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)


def test_paths() -> None:
    assert LEASES.path("ns", "x") == "/apis/coordination.k8s.io/v1/namespaces/ns/leases/x"
    assert CM.path(None) == "/api/v1/services" and NODES.path("ignored", "n0") == "/api/v1/nodes/n0"
    md = Resource("supernode.io", "v1alpha1", "modeldeployments")
    assert md.path("llm", "a", "status") == "/apis/supernode.io/v1alpha1/namespaces/llm/modeldeployments/a/status"
    assert str(Resource("", "v1", "pods", label_selector="a=b")) == "pods.core[a=b]"


def test_explicit_or_in_cluster_access_with_a_rotating_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert A.load_access("http://127.0.0.1:1/").url == "http://127.0.0.1:1"
    (tmp_path / "token").write_text("t1\n")
    (tmp_path / "ca.crt").write_text("")
    monkeypatch.setattr(A, "SA_DIR", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    access = A.load_access()
    assert access.url == "https://[fd00::1]:443" and access.token() == "t1"
    (tmp_path / "token").write_text("t2")  # rotated by the kubelet: the next request sends the new one
    assert access.token() == "t2"


def svc(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"}, "spec": data}


async def test_every_verb_against_the_emulator() -> None:
    async with K8sEmulator(strict=False) as emu, kmock.Server(emu) as srv:
        rest = KubeRest(A.Access(str(srv.url).rstrip("/")), request_timeout_s=5)
        try:
            created = await rest.create(CM, "ns", svc("a", k="1"))
            assert created["metadata"]["name"] == "a" and created["metadata"]["resourceVersion"]
            labelled = {**svc("b"), "metadata": {"name": "b", "namespace": "ns", "labels": {"x": "y"}}}
            await rest.create(CM, "ns", labelled)
            items, rv = await rest.list(CM, "ns", selector="x=y")
            assert [i["metadata"]["name"] for i in items] == ["b"] and rv
            assert all(i["kind"] == "Service" and i["apiVersion"] == "v1" for i in items)
            patched = await rest.patch(CM, "ns", "a", {"spec": {"k": "2"}})
            assert patched["spec"] == {"k": "2"}
            got = await rest.get(CM, "ns", "a")
            stale = {**got, "metadata": {**got["metadata"], "resourceVersion": created["metadata"]["resourceVersion"]}}
            with pytest.raises(ApiError) as conflict:
                await rest.update(CM, "ns", "a", stale)
            assert conflict.value.status == 409
            updated = await rest.update(CM, "ns", "a", {**got, "spec": {"k": "3"}})
            assert updated["spec"] == {"k": "3"}

            events: list[dict[str, Any]] = []

            async def watch() -> None:
                async for ev in rest.watch(CM, "ns", updated["metadata"]["resourceVersion"], 2):
                    events.append(ev)
                    if ev["type"] == "DELETED":
                        return

            task = asyncio.create_task(watch())
            await asyncio.sleep(0.1)
            await rest.delete(CM, "ns", "a", propagation="Background")
            await asyncio.wait_for(task, 5)
            assert events[-1]["type"] == "DELETED" and events[-1]["object"]["metadata"]["name"] == "a"
            with pytest.raises(ApiError) as missing:
                await rest.get(CM, "ns", "a")
            assert missing.value.status == 404 and "404" in str(missing.value)
        finally:
            await rest.close()
            emu.close_watches()
