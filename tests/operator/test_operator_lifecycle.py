"""The real kopf operator against the test Kubernetes API: apply, scale, fail, delete."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from builders import operator_md
from fake_cluster import MD_KIND, FakeCluster, node
from k8s_emulator import K8sEmulator
from operator_harness import eventually, running_operator

from supernode.api import constants as C

MDS = f"/apis/{C.GROUP}/{C.VERSION}/namespaces/llm/{C.PLURAL}"
MERGE = {"Content-Type": "application/merge-patch+json"}


def ascend_md(name: str = "v4", replicas: int = 2) -> dict[str, Any]:
    return (operator_md(name).engine("vllm").accelerator("ascend-910c", 16)
            .parallelism(tensor=16, data=2, expert=32).placement(supernode="Required").replicas(replicas).dict())


def groups(emu: K8sEmulator, name: str = "v4") -> list[dict[str, Any]]:
    return emu.objects_of("statefulsets", "apps", "llm", f"{C.LABEL_DEPLOYMENT}={name}")


def status(emu: K8sEmulator, name: str = "v4") -> dict[str, Any]:
    md = emu.get(C.PLURAL, "llm", name, C.GROUP)
    return (md or {}).get("status", {})


def cond(emu: K8sEmulator, type_: str, name: str = "v4") -> dict[str, Any]:
    return next(c for c in status(emu, name).get("conditions", []) if c["type"] == type_)


async def setup(emu: K8sEmulator, superpods: int = 3) -> FakeCluster:
    emu.declare(MD_KIND, shortnames=["md"])
    cluster = FakeCluster(emu)
    for sp in range(superpods):
        await cluster.add_nodes(*(node(f"sp{sp}-n{i}", f"sp-{sp}") for i in range(2)))
    return cluster


async def test_apply_creates_groups_services_pdbs_with_placement(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu)
    async with cluster.running(), running_operator(url), httpx.AsyncClient(base_url=url) as c:
        assert (await c.post(MDS, json=ascend_md())).status_code == 201
        await eventually(lambda: status(emu).get("readyReplicas") == 2, what="2 ready groups")
        sts = groups(emu)
        assert len(sts) == 2
        superpods = set()
        for s in sts:
            hosts = s["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
            sp = {e["key"]: e["values"] for e in hosts}[C.NODE_LABEL_ASCEND_SUPERPOD][0]
            superpods.add(sp)
            nodes = {e["key"]: e["values"] for e in hosts}[C.NODE_LABEL_HOSTNAME]
            assert all(n.startswith(sp.replace("sp-", "sp")) for n in nodes)
        assert len(superpods) == 2, "groups spread over supernodes"
        svcs = emu.objects_of("services", "", "llm")
        assert sorted(s["spec"].get("clusterIP", "") for s in svcs) == ["", "None", "None"]
        assert len(emu.objects_of("poddisruptionbudgets", "policy", "llm")) == 2
        st = status(emu)
        assert st["replicas"] == 2 and st["updatedReplicas"] == 2 and st["placeableReplicas"] == 2
        assert st["selector"] == f"{C.LABEL_DEPLOYMENT}=v4,{C.LABEL_ROLE}={C.ROLE_LEADER}"
        assert cond(emu, C.COND_READY)["status"] == "True"
        assert cond(emu, C.COND_CAPACITY_LIMITED)["status"] == "False"
        leaders = emu.objects_of("pods", "", "llm", f"{C.LABEL_ROLE}={C.ROLE_LEADER}")
        assert len(leaders) == 2
        reasons = [e["reason"] for e in emu.objects_of("events", "", "llm")]
        assert reasons.count("GroupCreated") == 2


async def test_noop_resync_performs_zero_writes(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu)
    async with cluster.running(), running_operator(url, resync=0.1), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=ascend_md())
        await eventually(lambda: status(emu).get("readyReplicas") == 2, what="ready")
        await eventually(lambda: cond(emu, C.COND_PROGRESSING)["status"] == "False", what="settled")
        import asyncio
        await asyncio.sleep(0.3)
        since = emu.request_count
        await asyncio.sleep(1.0)  # ~10 resyncs
        reads = emu.request_count - since
        assert reads > 0, "the timer did resync"
        assert emu.writes(since) == []


async def test_scale_up_and_down_removes_highest_groups_first(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    async with cluster.running(), running_operator(url), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=ascend_md(replicas=2))
        await eventually(lambda: status(emu).get("readyReplicas") == 2, what="2 ready")
        r = await c.patch(f"{MDS}/v4/scale", json={"spec": {"replicas": 3}}, headers=MERGE)
        assert r.status_code == 200
        await eventually(lambda: status(emu).get("readyReplicas") == 3, what="3 ready")
        await c.patch(f"{MDS}/v4/scale", json={"spec": {"replicas": 1}}, headers=MERGE)
        await eventually(lambda: len(groups(emu)) == 1, what="scaled to 1")
        (left,) = groups(emu)
        assert left["metadata"]["labels"][C.LABEL_GROUP] == "0"
        await eventually(lambda: status(emu).get("replicas") == 1 and status(emu).get("readyReplicas") == 1,
                         what="status 1")
        assert (await c.get(f"{MDS}/v4/scale")).json()["status"]["replicas"] == 1


async def test_capacity_limited_places_what_fits(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=1)
    async with cluster.running(), running_operator(url), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=ascend_md(replicas=3))
        await eventually(lambda: cond(emu, C.COND_CAPACITY_LIMITED)["status"] == "True", what="CapacityLimited")
        await eventually(lambda: status(emu).get("readyReplicas") == 1, what="1 group placed")
        st = status(emu)
        assert st["placeableReplicas"] == 1 and len(groups(emu)) == 1
        message = cond(emu, C.COND_CAPACITY_LIMITED)["message"]
        assert "1/3 groups placeable" in message
        assert any(e["reason"] == "CapacityShortfall" for e in emu.objects_of("events", "", "llm"))
        # New capacity arrives: the operator places the rest.
        await cluster.add_nodes(*(node(f"sp9-n{i}", "sp-9") for i in range(2)),
                                *(node(f"sp8-n{i}", "sp-8") for i in range(2)))
        await eventually(lambda: status(emu).get("readyReplicas") == 3, what="3 ready after capacity")
        assert cond(emu, C.COND_CAPACITY_LIMITED)["status"] == "False"


@pytest.mark.parametrize(("engine", "field"), [
    ("tensorrt", "spec.engine.type"),  # refused by the model (schema)
    ("builtin", "spec.parallelism"),  # valid CRD, but a shape the builtin engine cannot run (DP2 x TP16)
    ("builtin-v4", "spec.parallelism.expert"),  # EP16 over builtin://tiny-v4's 8 routed experts
])
async def test_invalid_spec_sets_degraded_without_crash_loop(
    k8s: tuple[K8sEmulator, str], engine: str, field: str
) -> None:
    emu, url = k8s
    await setup(emu)
    bad = ascend_md(name="bad")
    bad["spec"]["engine"]["type"] = engine.removesuffix("-v4")
    if engine.endswith("-v4"):
        bad["spec"]["model"]["source"] = "builtin://tiny-v4"
        bad["spec"]["parallelism"] = {"tensor": 16, "pipeline": 1, "data": 1, "expert": 16}
    async with running_operator(url), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=bad)
        await c.post(MDS, json=ascend_md(name="good", replicas=1))
        await eventually(lambda: cond(emu, C.COND_DEGRADED, "bad")["status"] == "True", what="Degraded")
        message = cond(emu, C.COND_DEGRADED, "bad")["message"]
        assert message.startswith(field)
        assert cond(emu, C.COND_DEGRADED, "bad")["reason"] == "InvalidSpec"
        await eventually(lambda: len(groups(emu, "good")) == 1, what="other deployments still served")
        import asyncio
        await asyncio.sleep(0.5)
        events = [e for e in emu.objects_of("events", "", "llm") if e["involvedObject"]["name"] == "bad"]
        assert len(events) == 1 and events[0]["reason"] == "InvalidSpec"
        assert groups(emu, "bad") == []


async def test_delete_removes_everything(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu)
    async with cluster.running(), running_operator(url), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=ascend_md())
        await eventually(lambda: status(emu).get("readyReplicas") == 2, what="ready")
        await c.delete(f"{MDS}/v4")
        await eventually(lambda: emu.get(C.PLURAL, "llm", "v4", C.GROUP) is None, what="MD gone")
        assert groups(emu) == []
        assert emu.objects_of("services", "", "llm") == []
        assert emu.objects_of("poddisruptionbudgets", "policy", "llm") == []
        assert emu.objects_of("pods", "", "llm") == []


async def test_concurrent_deployments_never_share_a_supernode(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    cluster.ready = False  # pods appear late: placement must not rely on seeing them
    async with cluster.running(period=0.5), running_operator(url), httpx.AsyncClient(base_url=url) as c:
        since = emu.request_count
        for name in ("a", "b", "c"):
            await c.post(MDS, json=ascend_md(name=name, replicas=1))
        await eventually(lambda: all(len(groups(emu, n)) == 1 for n in "abc"), what="3 groups")
        await eventually(lambda: len(emu.objects_of("pods", "", "llm")) == 6, what="pods")
        import asyncio
        await asyncio.sleep(0.5)
        superpods = {s["metadata"]["annotations"][C.LABEL_SUPERNODE] for n in "abc" for s in groups(emu, n)}
        assert superpods == {"sp-0", "sp-1", "sp-2"}
        assert not [w for w in emu.writes(since) if w.startswith("PATCH") and "statefulsets" in w], \
            "no group was re-placed"


async def test_scale_down_deletes_each_removed_child_exactly_once(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    async with cluster.running(), running_operator(url), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=ascend_md(replicas=3))
        await eventually(lambda: status(emu).get("readyReplicas") == 3, what="3 ready")
        removed = sorted(s["metadata"]["name"] for s in groups(emu) if s["metadata"]["labels"][C.LABEL_GROUP] != "0")
        since = emu.request_count
        await c.patch(f"{MDS}/v4/scale", json={"spec": {"replicas": 1}}, headers=MERGE)
        await eventually(lambda: len(groups(emu)) == 1 and status(emu).get("replicas") == 1, what="scaled to 1")
        await eventually(lambda: cond(emu, C.COND_PROGRESSING)["status"] == "False", what="settled")
    deletes = [w.split(" ", 1)[1] for w in emu.writes(since) if w.startswith("DELETE ")]
    children = [p for p in deletes if "/pods/" not in p]
    want = sorted(f"/{base}/namespaces/llm/{plural}/{name}" for name in removed for base, plural in (
        ("apis/apps/v1", "statefulsets"), ("api/v1", "services"), ("apis/policy/v1", "poddisruptionbudgets")))
    assert sorted(children) == want, "every removed group's StatefulSet, Service and PDB deleted once"


async def test_no_finalizer_so_a_deployment_deleted_while_the_operator_is_down_goes(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=2)
    old = ascend_md("old", replicas=1)
    old["metadata"]["finalizers"] = [C.FINALIZER]  # put there by an operator version that used kopf timers
    async with cluster.running(), httpx.AsyncClient(base_url=url) as c:
        async with running_operator(url):
            assert (await c.post(MDS, json=ascend_md(replicas=1))).status_code == 201
            assert (await c.post(MDS, json=old)).status_code == 201
            await eventually(lambda: status(emu).get("readyReplicas") == 1, what="ready")
            await eventually(lambda: not emu.get(C.PLURAL, "llm", "old", C.GROUP)["metadata"].get("finalizers"),
                             what="the old finalizer removed")
            await asyncio.sleep(0.5)  # several resyncs: still no finalizer
            assert not emu.get(C.PLURAL, "llm", "v4", C.GROUP)["metadata"].get("finalizers")
        # The operator is stopped: deleting the deployment must not hang on anything it would have to do.
        for name in ("v4", "old"):
            assert (await c.delete(f"{MDS}/{name}")).status_code == 200
            assert (await c.get(f"{MDS}/{name}")).status_code == 404
        assert groups(emu) == [] and emu.objects_of("services", "", "llm") == []
