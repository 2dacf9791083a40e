"""The real operator: rolling updates group by group, gang restarts, restarts of the operator, LWS mode."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from k8s_emulator import LWS_KIND, K8sEmulator
from operator_harness import eventually, running_operator
from test_operator_lifecycle import MDS, MERGE, ascend_md, cond, groups, setup, status

from supernode.api import constants as C


def sts_timeline(emu: K8sEmulator) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e["type"], e["object"]["metadata"]["name"], e["object"]) for _, gp, e in emu.history
            if gp == "apps/statefulsets"]


def max_concurrent(emu: K8sEmulator) -> int:
    live: set[str] = set()
    peak = 0
    for type_, name, _ in sts_timeline(emu):
        if type_ == "ADDED":
            live.add(name)
        elif type_ == "DELETED":
            live.discard(name)
        peak = max(peak, len(live))
    return peak


async def _rolled(emu: K8sEmulator, c: httpx.AsyncClient, image: str) -> None:
    r = await c.patch(f"{MDS}/v4", json={"spec": {"engine": {"type": "vllm", "image": image}}}, headers=MERGE)
    generation = r.json()["metadata"]["generation"]
    await eventually(lambda: status(emu).get("observedGeneration") == generation
                     and status(emu).get("updatedReplicas") == 2 and len(groups(emu)) == 2
                     and status(emu).get("readyReplicas") == 2
                     and cond(emu, C.COND_PROGRESSING)["status"] == "False", timeout=20, what="rolled")


async def test_spec_change_rolls_group_by_group_with_surge_and_drain(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    md = ascend_md()
    md["spec"]["rollout"] = {"maxSurge": 1, "maxUnavailable": 0, "drainTimeoutSeconds": 1}
    async with cluster.running(), running_operator(url, resync=0.1), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=md)
        await eventually(lambda: status(emu).get("readyReplicas") == 2, what="ready")
        before = {s["metadata"]["name"] for s in groups(emu)}
        # Watch availability while rolling: ready, non-draining groups never drop below 2.
        lowest = [2]

        async def watch_availability() -> None:
            while True:
                pods = emu.objects_of("pods", "", "llm")
                ready = 0
                for s in groups(emu):
                    if (s["metadata"].get("annotations") or {}).get(C.ANNOTATION_DRAINING) == "true":
                        continue
                    mine = [p for p in pods if p["metadata"]["name"].startswith(s["metadata"]["name"] + "-")]
                    if len(mine) == 2 and all(p.get("status", {}).get("conditions") for p in mine):
                        ready += 1
                lowest[0] = min(lowest[0], ready)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch_availability())
        try:
            await _rolled(emu, c, "vllm:new")
        finally:
            watcher.cancel()
        after = {s["metadata"]["name"] for s in groups(emu)}
        assert not before & after, "every group was replaced"
        assert max_concurrent(emu) == 3, "never more than replicas + maxSurge groups"
        assert lowest[0] >= 2, "never fewer ready groups than replicas - maxUnavailable"
        drained = [name for type_, name, obj in sts_timeline(emu) if type_ == "MODIFIED"
                   and (obj["metadata"].get("annotations") or {}).get(C.ANNOTATION_DRAINING) == "true"]
        assert set(drained) == before, "old groups were drained before deletion"
        reasons = [e["reason"] for e in emu.objects_of("events", "", "llm")]
        assert reasons.count("GroupRolling") == 2 and reasons.count("GroupRolled") == 2
        assert "CapacityShortfall" not in reasons, "a rollout is not a capacity shortfall"


async def test_rollout_without_surge_replaces_one_at_a_time(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=2)  # no room to surge
    md = ascend_md()
    md["spec"]["rollout"] = {"maxSurge": 0, "maxUnavailable": 1, "drainTimeoutSeconds": 0}
    async with cluster.running(), running_operator(url, resync=0.1), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=md)
        await eventually(lambda: status(emu).get("readyReplicas") == 2, what="ready")
        await _rolled(emu, c, "vllm:v2")
        assert max_concurrent(emu) == 2


async def test_failed_pod_recreates_whole_group_then_budget_exhausts(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=1)
    md = ascend_md(replicas=1)
    md["spec"]["recovery"] = {"maxGroupRestarts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 2}
    async with cluster.running(), running_operator(url, resync=0.1), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=md)
        await eventually(lambda: status(emu).get("readyReplicas") == 1, what="ready")
        (sts,) = groups(emu)
        name = sts["metadata"]["name"]
        uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in emu.objects_of("pods", "", "llm")}
        await cluster.set_pod("llm", f"{name}-1", ready=False, crash=True)  # a worker crash-loops
        crashed = time.monotonic()
        await eventually(lambda: (groups(emu)[0]["metadata"].get("annotations") or {}).get(
            C.ANNOTATION_RESTARTS) == "1", what="restart recorded")
        # Even the first restart waits backoffSeconds (1 s) from when the failure was seen, as `supernode up` does.
        assert time.monotonic() - crashed >= 1.0
        assert any(e["reason"] == "GroupFailed" for e in emu.objects_of("events", "", "llm"))
        assert C.ANNOTATION_FAILURE_SEEN not in (groups(emu)[0]["metadata"].get("annotations") or {})
        await eventually(lambda: len(emu.objects_of("pods", "", "llm")) == 2 and all(
            p["metadata"]["uid"] != uids[p["metadata"]["name"]] for p in emu.objects_of("pods", "", "llm")),
            what="both ranks recreated")
        await eventually(lambda: any(e["reason"] == "GroupRestarted" for e in emu.objects_of("events", "", "llm")),
                         what="GroupRestarted event")
        await eventually(lambda: status(emu).get("readyReplicas") == 1, what="ready again")
        await cluster.set_pod("llm", f"{name}-0", ready=False, crash=True)
        await eventually(lambda: cond(emu, C.COND_DEGRADED)["status"] == "True", what="Degraded")
        degraded = cond(emu, C.COND_DEGRADED)
        assert degraded["reason"] == "RestartBudgetExhausted" and "maxGroupRestarts" in degraded["message"]


async def test_operator_restart_midway_converges_without_duplicates(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=3)
    async with cluster.running(), httpx.AsyncClient(base_url=url) as c:
        async with running_operator(url):
            await c.post(MDS, json=ascend_md(replicas=3))
            await eventually(lambda: len(groups(emu)) >= 1, what="first group")
        async with running_operator(url):
            await eventually(lambda: status(emu).get("readyReplicas") == 3, what="converged")
            await asyncio.sleep(0.3)
        names = [s["metadata"]["name"] for s in groups(emu)]
        assert len(names) == len(set(names)) == 3
        assert len(emu.objects_of("services", "", "llm")) == 4
        assert len(emu.objects_of("pods", "", "llm")) == 6


async def test_lws_installed_renders_leaderworkersets(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    await setup(emu)
    emu.declare(LWS_KIND)
    await emu.put_object({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                          "metadata": {"name": "leaderworkersets.leaderworkerset.x-k8s.io"}, "spec": {}})
    async with running_operator(url), httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=ascend_md())
        await eventually(lambda: len(emu.objects_of("leaderworkersets", "leaderworkerset.x-k8s.io", "llm")) == 2,
                         what="2 LWS")
        lws = emu.objects_of("leaderworkersets", "leaderworkerset.x-k8s.io", "llm")[0]
        assert lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
        assert groups(emu) == []
        (svc,) = await eventually(lambda: emu.objects_of("services", "", "llm"), what="leader Service")
        assert svc["spec"]["selector"][C.LABEL_ROLE] == C.ROLE_LEADER
        await eventually(lambda: status(emu).get("replicas") == 2, what="status")
        assert status(emu)["readyReplicas"] == 0  # no LWS controller here: no pods, never "ready"
