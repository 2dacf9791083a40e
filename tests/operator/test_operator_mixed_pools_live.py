"""The real operator (kopf against the emulator) on a mixed-pool ModelDeployment: each pool placed on its
own nodes, the pool without nodes CapacityLimited by name while the other serves, per-pool status, the
Ascend pool's rank table written once the device plugin has annotated every rank, per-pool scaling."""

from __future__ import annotations

import json
from typing import Any

import httpx
from builders import operator_md
from fake_cluster import node
from k8s_emulator import K8sEmulator
from operator_harness import eventually, running_operator
from test_operator_lifecycle import MDS, MERGE, cond, setup, status

from supernode.api import constants as C
from supernode.operator.ranktable import DEVICE_ANNOTATION


def mixed_md() -> dict[str, Any]:
    """Ascend pool: MindIE, 2 nodes x 16 NPUs per group (inherited); H200 pool: vLLM, one 8-GPU pod."""
    return (operator_md("v4").engine("mindie").accelerator("ascend-910c", 16).parallelism(tensor=16, data=2)
            .placement(supernode="Required")
            .pool("ascend", replicas=1)
            .pool("h200", "nvidia-h200", 8, replicas=1, parallelism={"tensor": 8}, engine={"type": "vllm"})
            .dict())


def pool_groups(emu: K8sEmulator, pool: str) -> list[dict[str, Any]]:
    return emu.objects_of("statefulsets", "apps", "llm", f"{C.LABEL_DEPLOYMENT}=v4,{C.LABEL_POOL}={pool}")


def pool_status(emu: K8sEmulator, pool: str) -> dict[str, Any]:
    return next((p for p in status(emu).get("pools", []) if p["name"] == pool), {})


async def annotate_devices(emu: K8sEmulator, c: httpx.AsyncClient, sts: dict[str, Any]) -> list[str]:
    """What the Ascend device plugin does on admission: each pod's NPUs in its annotation. Returns the UIDs."""
    uids = []
    for pod in emu.objects_of("pods", "", "llm"):
        meta = pod["metadata"]
        if not meta["name"].startswith(sts["metadata"]["name"] + "-"):
            continue
        rank = int(meta["labels"]["apps.kubernetes.io/pod-index"])
        info = {"pod_name": meta["name"], "server_id": f"10.0.0.{rank + 1}", "super_pod_id": 0,
                "devices": [{"device_id": str(d), "device_ip": f"192.168.{rank}.{d}",
                             "super_device_id": str(16 * rank + d)} for d in range(16)]}
        await c.patch(f"/api/v1/namespaces/llm/pods/{meta['name']}", headers=MERGE,
                      json={"metadata": {"annotations": {DEVICE_ANNOTATION: json.dumps(info)}}})
        uids.append(meta["uid"])
    return sorted(uids)


async def test_mixed_pools_place_report_and_scale_per_pool(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=1)  # one SuperPoD of 2 Ascend nodes, no GPU node yet
    async with cluster.running(), running_operator(url, resync=0.1), httpx.AsyncClient(base_url=url) as c:
        assert (await c.post(MDS, json=mixed_md())).status_code == 201
        await eventually(lambda: pool_status(emu, "ascend").get("readyReplicas") == 1, what="ascend pool ready")
        await eventually(lambda: cond(emu, C.COND_CAPACITY_LIMITED)["status"] == "True", what="CapacityLimited")
        assert "pool h200:" in cond(emu, C.COND_CAPACITY_LIMITED)["message"]
        assert "pool ascend" not in cond(emu, C.COND_CAPACITY_LIMITED)["message"]
        assert pool_status(emu, "h200")["capacityLimited"] and not pool_status(emu, "ascend")["capacityLimited"]
        assert status(emu)["poolSummary"] == "ascend:1/1 h200:0/1"
        assert pool_groups(emu, "h200") == [] and cond(emu, C.COND_DEGRADED)["status"] == "False"

        # The device plugin annotates both ranks: the group's rank table appears, built from those pods.
        [sts] = pool_groups(emu, "ascend")
        uids = await annotate_devices(emu, c, sts)
        name = f"{sts['metadata']['name']}-ranktable"
        cm = await eventually(lambda: emu.get("configmaps", "llm", name), what="rank table ConfigMap")
        table = json.loads(cm["data"]["hccl.json"])
        assert table["version"] == "1.2" and table["server_count"] == "2"
        assert cm["data"]["pods"].split() == uids
        assert cm["metadata"]["ownerReferences"][0]["name"] == sts["metadata"]["name"]

        # GPUs arrive: the h200 pool is placed there, and only there.
        await cluster.add_nodes(node("h200-0", None, devices=8, resource=C.RESOURCE_NVIDIA))
        await eventually(lambda: status(emu).get("readyReplicas") == 2, what="both pools ready")
        assert cond(emu, C.COND_CAPACITY_LIMITED)["status"] == "False"
        [gpu] = pool_groups(emu, "h200")
        hosts = gpu["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert hosts["values"] == ["h200-0"]

        # Scaling one pool touches only that pool's groups.
        ascend_before = [s["metadata"]["name"] for s in pool_groups(emu, "ascend")]
        md = emu.get(C.PLURAL, "llm", "v4", C.GROUP)
        pools = md["spec"]["pools"]
        pools[1]["replicas"] = 0
        await c.patch(f"{MDS}/v4", json={"spec": {"pools": pools}}, headers=MERGE)
        await eventually(lambda: pool_groups(emu, "h200") == [], what="h200 pool scaled to 0")
        assert [s["metadata"]["name"] for s in pool_groups(emu, "ascend")] == ascend_before
        await eventually(lambda: status(emu).get("poolSummary") == "ascend:1/1 h200:0/0", what="summary")


async def test_removing_a_pool_drains_its_groups_before_deleting_them(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=1)
    await cluster.add_nodes(node("h200-0", None, devices=8, resource=C.RESOURCE_NVIDIA))
    md = mixed_md()
    md["spec"]["rollout"] = {"maxSurge": 1, "maxUnavailable": 0, "drainTimeoutSeconds": 2}
    async with cluster.running(), running_operator(url, resync=0.1), httpx.AsyncClient(base_url=url) as c:
        assert (await c.post(MDS, json=md)).status_code == 201
        await eventually(lambda: status(emu).get("readyReplicas") == 2, what="both pools ready")
        [gpu] = pool_groups(emu, "h200")
        name = gpu["metadata"]["name"]
        pools = emu.get(C.PLURAL, "llm", "v4", C.GROUP)["spec"]["pools"]
        await c.patch(f"{MDS}/v4", json={"spec": {"pools": pools[:1]}}, headers=MERGE)

        def draining() -> bool:
            notes = (emu.get("statefulsets", "llm", name, "apps") or {}).get("metadata", {}).get("annotations") or {}
            return notes.get(C.ANNOTATION_DRAINING) == "true"

        await eventually(draining, what="the removed pool's group marked draining")
        leader = emu.get("pods", "llm", f"{name}-0")
        assert leader is not None and leader["metadata"]["annotations"][C.ANNOTATION_DRAINING] == "true"
        await eventually(lambda: cond(emu, C.COND_PROGRESSING)["status"] == "True", what="Progressing while draining")
        assert pool_groups(emu, "h200"), "deleted before its drain timeout"
        await eventually(lambda: pool_groups(emu, "h200") == [], what="the drained group deleted")
        timeline = [(e["type"], e["object"]) for _, gp, e in emu.history
                    if gp == "apps/statefulsets" and e["object"]["metadata"]["name"] == name]
        marked = [i for i, (t, o) in enumerate(timeline) if t == "MODIFIED"
                  and (o["metadata"].get("annotations") or {}).get(C.ANNOTATION_DRAINING) == "true"]
        deleted = [i for i, (t, _) in enumerate(timeline) if t == "DELETED"]
        assert marked and deleted and marked[0] < deleted[0]
        started = timeline[marked[0]][1]["metadata"]["annotations"][C.ANNOTATION_DRAIN_STARTED]
        assert started  # the drain clock the 2 s timeout ran on
        assert [s["metadata"]["name"] for s in pool_groups(emu, "ascend")]  # the other pool untouched
        await eventually(lambda: status(emu).get("poolSummary") == "ascend:1/1", what="summary without h200")
