"""A device goes bad under a running group: the real operator against the test Kubernetes API, with the
router's real Kubernetes discovery watching what the operator writes (fault_scenario.py)."""

from __future__ import annotations

from ascend_reports import ascend_report
from fault_scenario import NS, FaultScenario, ascend_md
from k8s_emulator import K8sEmulator

from supernode.api import constants as C

RESYNC = 5.0  # long: what happens within a second comes from the ConfigMap event, not from the resync
QUICK = 2.0  # where only the outcome matters: leader labels and status of new pods come with the resync


def events(scenario: FaultScenario, reason: str, ns: str = NS) -> list[dict[str, object]]:
    return [e for e in scenario.emu.objects_of("events", "", ns) if e["reason"] == reason]


async def test_separate_fault_fences_the_group_then_rebuilds_it_on_healthy_devices(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    async with FaultScenario(emu, url, resync=RESYNC) as s:
        await s.serving(ascend_md(replicas=2))
        before = s.groups()
        faulty_node = s.pods("0")[0]["spec"]["nodeName"]
        other = {p["metadata"]["uid"] for p in s.pods("1")}

        # A report whose CheckCode does not match is ignored, with one Event on the ConfigMap.
        await s.report(ascend_report(faulty_node).chips(16).fault("Ascend910-3", "SeparateNPU").tampered())
        await s.until(lambda: events(s, "DeviceInfoIgnored", C.ASCEND_DEVICE_INFO_NAMESPACE), what="Event")
        await s.report(ascend_report(faulty_node, update_time=1718702999).chips(16).tampered())
        assert len(events(s, "DeviceInfoIgnored", C.ASCEND_DEVICE_INFO_NAMESPACE)) == 1
        assert s.groups()["0"]["metadata"]["uid"] == before["0"]["metadata"]["uid"]

        # The device plugin reports chip 3 of the group's leader node as SeparateNPU.
        since = emu.request_count
        t0 = await s.report(ascend_report(faulty_node).chips(16).fault("Ascend910-3", "SeparateNPU", "8C1F8608"))
        t1 = await s.until(lambda: s.routable() == {1}, timeout=RESYNC, what="group 0 no longer routed to")
        assert t1 - t0 < RESYNC / 2, f"ejection took {t1 - t0:.2f}s: not event-driven"
        # Rebuilt on the healthy SuperPoD (its pods' events drive the passes: no resync needed), the other
        # group untouched.
        await s.until(lambda: s.status().get("readyReplicas") == 2 and s.routable() == {0, 1}
                      and s.groups()["0"]["metadata"]["uid"] != before["0"]["metadata"]["uid"], timeout=RESYNC,
                      what="group 0 ready again")
        assert {p["spec"]["nodeName"] for p in s.pods("0")} == {"sp2-n0", "sp2-n1"}
        assert s.groups()["1"]["metadata"]["uid"] == before["1"]["metadata"]["uid"]
        assert {p["metadata"]["uid"] for p in s.pods("1")} == other
        (rebuilt,) = events(s, "DeviceFaultRebuild")
        assert f"{faulty_node}/Ascend910-3: SeparateNPU code 8C1F8608" in str(rebuilt["message"])
        assert not events(s, "DeviceFaultRestart")
        writes = emu.writes(since)
        fence = writes.index(f"PATCH /api/v1/namespaces/{NS}/pods/{before['0']['metadata']['name']}-0")
        gone = writes.index(f"DELETE /apis/apps/v1/namespaces/{NS}/statefulsets/{before['0']['metadata']['name']}")
        assert fence < gone, "the leader is fenced off before any pod of the group is deleted"


async def test_restart_level_fault_restarts_in_place_and_pre_separate_drains_onto_healthy_devices(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    async with FaultScenario(emu, url, resync=QUICK) as s:
        await s.serving(ascend_md(replicas=2))
        before = s.groups()
        nodes0 = [p["spec"]["nodeName"] for p in s.pods("0")]
        pods0 = {p["metadata"]["uid"] for p in s.pods("0")}

        # Restart-level: the same group, on the same nodes, with new pods; one restart used.
        await s.report(ascend_report(nodes0[1]).chips(16).fault("Ascend910-7", "RestartBusiness", "80CB8009"))
        await s.until(lambda: events(s, "DeviceFaultRestart") and len(s.pods("0")) == 2
                      and not {p["metadata"]["uid"] for p in s.pods("0")} & pods0, what="group 0 restarted")
        g0 = s.groups()["0"]
        assert g0["metadata"]["uid"] == before["0"]["metadata"]["uid"]
        assert g0["metadata"]["annotations"][C.ANNOTATION_RESTARTS] == "1"
        assert g0["metadata"]["annotations"][C.ANNOTATION_FAULT_HANDLED]
        assert [p["spec"]["nodeName"] for p in s.pods("0")] == nodes0
        await s.until(lambda: s.routable() == {0, 1}, what="group 0 routed to again")

        # Pre-separate: group 1 drains (no new requests) while its replacement starts on the healthy SuperPoD.
        node1 = s.pods("1")[0]["spec"]["nodeName"]
        await s.report(ascend_report(node1).chips(16).fault("Ascend910-0", "PreSeparateNPU", "81078603"))
        await s.until(lambda: 1 not in s.routable(), timeout=QUICK, what="group 1 drained from routing")
        (drain,) = events(s, "DeviceFaultDrain")
        assert f"{node1}/Ascend910-0: PreSeparateNPU" in str(drain["message"])
        await s.until(lambda: s.routable() == {0, 1} and s.groups()["1"]["metadata"]["uid"] != before["1"][
            "metadata"]["uid"], timeout=6 * QUICK, what="group 1 replaced")
        assert {p["spec"]["nodeName"] for p in s.pods("1")} == {"sp2-n0", "sp2-n1"}
        assert len(events(s, "DeviceFaultRestart")) == 1 and s.groups()["0"]["metadata"]["uid"] == before["0"][
            "metadata"]["uid"]
