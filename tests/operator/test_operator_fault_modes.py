"""Device faults in the operator's other modes: watching one namespace (`--namespace`), where the device
plugin's reports still come from kube-system through a watch of that namespace alone."""

from __future__ import annotations

from ascend_reports import ascend_report
from fault_scenario import NS, FaultScenario, ascend_md
from k8s_emulator import K8sEmulator

from supernode.api import constants as C

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
