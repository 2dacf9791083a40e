"""Device faults in the operator's other modes: watching one namespace (`--namespace`), where the device
plugin's reports still come from kube-system through a watch of that namespace alone; a pre-separate drain
without the autoscaler, ended by the routers reporting the group idle (the drain watch)."""

from __future__ import annotations

import asyncio
from typing import Any

from ascend_reports import ascend_report
from builders import operator_md
from fake_cluster import node
from fake_router import ROUTER_NS, FakeRouter, router_service
from fault_scenario import NS, FaultScenario, ascend_md
from k8s_emulator import K8sEmulator

from supernode.api import constants as C
from supernode.operator.drain_watch import DrainWatchConfig
from supernode.operator.metrics import OperatorMetrics

QUICK = 2.0


async def test_namespaced_operator_reads_device_faults_from_kube_system_only(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    for ns in (NS, C.ASCEND_DEVICE_INFO_NAMESPACE):  # kopf serves the listed namespaces that exist
        await emu.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    async with FaultScenario(emu, url, resync=QUICK, namespaces=(NS,)) as s:
        await s.serving(ascend_md(replicas=2))
        before = s.groups()
        faulty_node = s.pods("0")[0]["spec"]["nodeName"]
        # A ConfigMap of that name outside kube-system is not a report (anyone could write one there).
        decoy = ascend_report(faulty_node).chips(16).fault("Ascend910-1", "SeparateNPU").configmap()
        decoy["metadata"]["namespace"] = NS
        assert (await s.http.post(f"/api/v1/namespaces/{NS}/configmaps", json=decoy)).status_code == 201

        await s.report(ascend_report(faulty_node).chips(16).fault("Ascend910-3", "SeparateNPU", "8C1F8608"))
        await s.until(lambda: s.routable() == {1}, timeout=QUICK, what="group 0 fenced off")
        await s.until(lambda: s.status().get("readyReplicas") == 2 and s.routable() == {0, 1}
                      and s.groups()["0"]["metadata"]["uid"] != before["0"]["metadata"]["uid"], timeout=4 * QUICK,
                      what="group 0 rebuilt")
        assert s.groups()["1"]["metadata"]["uid"] == before["1"]["metadata"]["uid"]
        assert faulty_node not in {p["spec"]["nodeName"] for p in s.pods("0")}

        # ConfigMaps were read in kube-system and nowhere else: no cluster-wide ConfigMap list or watch.
        reads = {r for r in emu.reads() if r.split("?")[0].endswith("/configmaps")}
        kube_system = f"/api/v1/namespaces/{C.ASCEND_DEVICE_INFO_NAMESPACE}/configmaps"
        assert reads == {kube_system, f"{kube_system}?watch"}, reads


async def test_pre_separate_drain_ends_when_the_routers_report_the_group_idle_without_the_autoscaler(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    router = FakeRouter()
    await router_service(emu)
    async with router.serving():
        drain = DrainWatchConfig(router_namespace=ROUTER_NS, router_ops_port=router.port, interval_seconds=0.2)
        async with FaultScenario(emu, url, resync=QUICK, drain=drain) as s:
            body = ascend_md(replicas=2)
            body["spec"]["rollout"]["drainTimeoutSeconds"] = 600  # the deadline is not what ends this drain
            await s.serving(body)
            before = s.groups()
            node1 = s.pods("1")[0]["spec"]["nodeName"]
            await s.report(ascend_report(node1).chips(16).fault("Ascend910-0", "PreSeparateNPU", "81078603"))
            await s.until(lambda: 1 not in s.routable(), timeout=QUICK, what="group 1 out of routing")
            # Replaced only once gone: the replacement would take its name (same slot, same revision).
            await asyncio.sleep(0.5)
            assert set(s.groups()) == {"0", "1"} and s.groups()["1"]["metadata"]["uid"] == before["1"]["metadata"][
                "uid"]
            progressing = next(c for c in s.status()["conditions"] if c["type"] == "Progressing")
            assert progressing["reason"] == "Draining" and "drains first" not in str(emu.objects_of("events", "", NS))
            router.draining = [{"deployment": f"{NS}/v4", "group": 1, "inFlight": 2, "engineRunning": 2,
                                "engineWaiting": 0, "scraped": True}]
            await asyncio.sleep(1.0)  # five asks: requests still open, so it stays
            assert before["1"]["metadata"]["name"] in {w["metadata"]["name"] for w in emu.objects_of(
                "statefulsets", "apps", NS)}
            router.draining[0].update(inFlight=0, engineRunning=0)
            await s.until(lambda: len(emu.objects_of("statefulsets", "apps", NS)) == 2 and s.routable() == {0, 1},
                          timeout=4 * QUICK, what="the idle group deleted, its replacement serving")
            assert s.groups()["1"]["metadata"]["uid"] != before["1"]["metadata"]["uid"]
            assert {p["spec"]["nodeName"] for p in s.pods("1")} == {"sp2-n0", "sp2-n1"}
            assert [e for e in emu.objects_of("events", "", NS) if e["reason"] == "GroupDrained"]


async def test_lws_mode_deploys_becomes_ready_and_rebuilds_a_faulty_group(k8s: tuple[K8sEmulator, str]) -> None:
    """LeaderWorkerSet mode end to end: groups as LWS-created pods (leader `<lws>-0`, worker `<lws>-0-1`), the
    router routing to their leaders, a SeparateNPU fault under a worker rebuilding that group elsewhere."""
    emu, url = k8s
    async with FaultScenario(emu, url, resync=QUICK, lws=True) as s:
        await s.serving(ascend_md(replicas=2))
        before = s.groups()
        assert set(before) == {"0", "1"} and not emu.objects_of("statefulsets", "apps", NS)
        lws0 = before["0"]["metadata"]["name"]
        pods0 = s.pods("0")
        assert [p["metadata"]["name"] for p in pods0] == [f"{lws0}-0", f"{lws0}-0-1"]
        assert [p["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"] for p in pods0] == ["0", "1"]
        assert pods0[0]["metadata"]["labels"][C.LABEL_ROLE] == C.ROLE_LEADER
        worker_node = pods0[1]["spec"]["nodeName"]

        await s.report(ascend_report(worker_node).chips(16).fault("Ascend910-5", "SeparateNPU", "8C1F8608"))
        await s.until(lambda: s.routable() == {1}, timeout=QUICK, what="group 0 fenced off")
        await s.until(lambda: s.status().get("readyReplicas") == 2 and s.routable() == {0, 1}
                      and s.groups()["0"]["metadata"]["uid"] != before["0"]["metadata"]["uid"], timeout=4 * QUICK,
                      what="group 0 rebuilt")
        assert {p["spec"]["nodeName"] for p in s.pods("0")} == {"sp2-n0", "sp2-n1"}
        assert s.groups()["1"]["metadata"]["uid"] == before["1"]["metadata"]["uid"]
        assert [e for e in emu.objects_of("events", "", NS) if e["reason"] == "DeviceFaultRebuild"]

        # Restart-level under group 1: its pods recreated in place by the LWS controller, the LWS kept.
        pods1 = {p["metadata"]["uid"] for p in s.pods("1")}
        nodes1 = [p["spec"]["nodeName"] for p in s.pods("1")]
        await s.report(ascend_report(nodes1[1]).chips(16).fault("Ascend910-2", "RestartBusiness", "80CB8009"))
        await s.until(lambda: len(s.pods("1")) == 2 and not {p["metadata"]["uid"] for p in s.pods("1")} & pods1
                      and s.routable() == {0, 1}, timeout=4 * QUICK, what="group 1 restarted in place")
        g1 = s.groups()["1"]
        assert g1["metadata"]["uid"] == before["1"]["metadata"]["uid"]
        assert g1["metadata"]["annotations"][C.ANNOTATION_RESTARTS] == "1"
        assert [p["spec"]["nodeName"] for p in s.pods("1")] == nodes1


async def test_an_unhealthy_gpu_in_a_pods_status_rebuilds_only_the_group_holding_it(
        k8s: tuple[K8sEmulator, str]) -> None:
    """NVIDIA: two groups share one 8-GPU node; the device plugin drops a GPU (allocatable 7/8) and the kubelet
    reports it Unhealthy in the status of the pod holding it (KEP-4680): that group moves, the other stays,
    and the GPU counts once among the device faults, as a repair does among the repairs."""
    emu, url = k8s
    gpu, clique = C.RESOURCE_NVIDIA, "nvidia.com/gpu.clique"
    metrics = OperatorMetrics()
    async with FaultScenario(emu, url, resync=QUICK, superpods=0, metrics=metrics) as s:
        await s.cluster.add_nodes(node("gpu-a", "c0", devices=8, resource=gpu, superpod_label=clique))
        await s.serving(operator_md("v4").engine("vllm").accelerator("nvidia-h200", 4).parallelism(tensor=4)
                        .replicas(2).dict())
        before = s.groups()
        assert {p["spec"]["nodeName"] for g in ("0", "1") for p in s.pods(g)} == {"gpu-a"}
        await s.cluster.add_nodes(node("gpu-b", "c0", devices=8, resource=gpu, superpod_label=clique))

        def health(**devices: str) -> dict[str, Any]:  # what the kubelet writes into every such pod's status
            return {"status": {"containerStatuses": [{"name": "engine", "allocatedResourcesStatus": [{
                "name": gpu, "resources": [{"resourceID": k, "health": v} for k, v in devices.items()]}]}]}}

        await emu.patch_object("pods", NS, s.pods("1")[0]["metadata"]["name"], health(**{"GPU-1a": "Healthy"}),
                               subresource="status")
        await emu.patch_object("pods", NS, s.pods("0")[0]["metadata"]["name"],
                               health(**{"GPU-0a": "Healthy", "GPU-0b": "Unhealthy"}), subresource="status")
        await emu.patch_object("nodes", None, "gpu-a", {"status": {"allocatable": {gpu: "7"}, "capacity": {gpu: "8"}}},
                               subresource="status")
        old_pods = {p["metadata"]["uid"] for p in s.pods("0")}

        def rebuilt_pods() -> list[dict[str, Any]]:  # status and discovery may still show the old group for a moment
            pods = s.pods("0")
            fresh = pods and not old_pods & {p["metadata"]["uid"] for p in pods}
            return pods if fresh and all(p["spec"].get("nodeName") for p in pods) else []

        await s.until(lambda: s.groups()["0"]["metadata"]["uid"] != before["0"]["metadata"]["uid"]
                      and rebuilt_pods() and s.status().get("readyReplicas") == 2 and s.routable() == {0, 1},
                      timeout=4 * QUICK, what="group 0 rebuilt")
        assert {p["spec"].get("nodeName") for p in rebuilt_pods()} == {"gpu-b"}
        assert s.groups()["1"]["metadata"]["uid"] == before["1"]["metadata"]["uid"], "the healthy group stays"
        (rebuilt,) = [e for e in emu.objects_of("events", "", NS) if e["reason"] == "DeviceFaultRebuild"]
        assert "gpu-a/GPU-0b: nvidia.com/gpu Unhealthy" in str(rebuilt["message"])
        await asyncio.sleep(QUICK)  # a resync or two after the rebuild: the fault is not counted again
        sample = metrics.registry.get_sample_value
        assert sample("supernode_operator_device_faults_total", {"level": f"{gpu} Unhealthy"}) == 1
        assert sample("supernode_operator_fault_repairs_total", {"action": "rebuild"}) == 1
