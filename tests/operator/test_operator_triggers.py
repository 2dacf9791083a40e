"""Which ModelDeployment events make a reconcile pass: echoes of our own writes are skipped, real changes
are not (the pure rule, then the real kopf operator against the test Kubernetes API)."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp.web
import attrs
import httpx
import kmock
from builders import operator_md
from fake_cluster import FakeCluster
from k8s_emulator import K8sEmulator
from kmock._internal import rendering
from operator_harness import eventually, running_operator
from test_operator_lifecycle import MDS, MERGE, ascend_md, groups, setup, status

from supernode.api import constants as C
from supernode.operator.metrics import OperatorMetrics
from supernode.operator.triggers import PassFilter, pass_inputs


def reconciled() -> dict[str, Any]:
    md = operator_md("v4").replicas(1).dict()
    md["metadata"].update(uid="u1", generation=3, resourceVersion="10", annotations={"team": "a"})
    md["status"] = {"observedGeneration": 3, "replicas": 1, "conditions": [
        {"type": C.COND_READY, "status": "False", "reason": "GroupsNotReady"}]}
    return md


def echo_of_status(md: dict[str, Any]) -> dict[str, Any]:
    """What our own status patch comes back as: a new resourceVersion and status, nothing else."""
    out = copy.deepcopy(md)
    out["metadata"]["resourceVersion"] = "11"
    out["status"].update(readyReplicas=1, conditions=[{"type": C.COND_READY, "status": "True", "reason": "x"}])
    out["metadata"]["annotations"]["kopf.zalando.org/last-handled-configuration"] = "{}"
    out["metadata"]["finalizers"] = []
    return out


def test_echoes_of_our_writes_need_no_pass() -> None:
    seen = PassFilter()
    md = reconciled()
    assert seen.needed("u1", pass_inputs(md)), "never reconciled"
    seen.completed("u1", pass_inputs(md))
    assert not seen.needed("u1", pass_inputs(md))
    assert not seen.needed("u1", pass_inputs(echo_of_status(md)))
    seen.forget("u1")
    assert seen.needed("u1", pass_inputs(echo_of_status(md))), "forgotten: the next event reconciles"


def test_every_input_a_pass_reads_from_the_object_makes_a_pass() -> None:
    seen = PassFilter()
    md = reconciled()
    seen.completed("u1", pass_inputs(md))

    def changed(edit: Any) -> bool:
        new = echo_of_status(md)
        edit(new)
        return seen.needed("u1", pass_inputs(new))

    assert changed(lambda m: m["spec"].update(replicas=2))
    assert changed(lambda m: m["metadata"].update(generation=4))
    assert changed(lambda m: m["metadata"].setdefault("labels", {}).update(tier="gold"))
    assert changed(lambda m: m["metadata"]["annotations"].update(team="b"))
    assert changed(lambda m: m["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z"))
    assert changed(lambda m: m["status"].update(autoscaling={"desiredReplicas": 2}))  # the autoscaler's block
    assert changed(lambda m: m["status"]["conditions"].append({"type": "ScalingActive", "status": "True"}))
    assert not changed(lambda m: m["status"].update(placeableReplicas=7))  # a key the pass writes itself


async def test_echo_events_are_skipped_and_a_spec_change_after_them_still_reconciles(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=2)
    metrics = OperatorMetrics()

    def passes() -> float:
        return metrics.reconciles.labels("ok")._value.get()

    def skipped() -> float:
        return metrics.skipped._value.get()

    # A resync far away: whatever happens below comes from the watch events alone.
    async with cluster.running(), running_operator(url, resync=120, metrics=metrics), \
            httpx.AsyncClient(base_url=url) as c:
        assert (await c.post(MDS, json=ascend_md(replicas=1))).status_code == 201
        await eventually(lambda: status(emu).get("observedGeneration") == 1, what="the first pass wrote status")
        await eventually(lambda: skipped() >= 1, what="the echo of that status patch skipped")
        assert passes() == 1
        # The spec changes after the skipped echo: the change still reconciles, long before any resync.
        r = await c.patch(f"{MDS}/v4/scale", json={"spec": {"replicas": 2}}, headers=MERGE)
        assert r.status_code == 200
        await eventually(lambda: len(groups(emu)) == 2, what="the second group from the scale event")
        await eventually(lambda: status(emu).get("observedGeneration") == 2, what="status of the second pass")
        await eventually(lambda: skipped() >= 2, what="its echo skipped too")
        # A metadata-only change (no generation bump) is an input as well.
        await c.patch(f"{MDS}/v4", json={"metadata": {"labels": {"tier": "gold"}}}, headers=MERGE)
        await eventually(lambda: passes() == 3, what="a pass for the label change")
        assert passes() == 3, "echo events caused passes"


async def test_a_deleted_child_comes_back_although_echo_events_are_skipped(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster: FakeCluster = await setup(emu, superpods=1)
    metrics = OperatorMetrics()
    async with cluster.running(), running_operator(url, resync=0.3, metrics=metrics), \
            httpx.AsyncClient(base_url=url) as c:
        await c.post(MDS, json=ascend_md(replicas=1))
        await eventually(lambda: status(emu).get("readyReplicas") == 1, what="ready")
        await eventually(lambda: metrics.skipped._value.get() >= 1, what="an echo skipped")
        await emu.delete_object("services", "llm", "v4")  # the leader Service: no ModelDeployment event
        assert emu.get("services", "llm", "v4") is None
        await eventually(lambda: emu.get("services", "llm", "v4") is not None, what="the resync restores it")


@attrs.define(kw_only=True)
class ConflictingStatus(K8sEmulator):
    """Answers the first `conflicts` status patches with 409 Conflict (another writer got there first)."""

    conflicts: int = 1

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        if request.subresource == "status" and raw is not None and raw.method == "PATCH" and self.conflicts:
            self.conflicts -= 1
            return self._json({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
                               "reason": "Conflict", "message": "the object has been modified"}, 409)
        return await super()._handle(request)


async def test_a_failed_pass_is_retried_without_a_new_event() -> None:
    async with ConflictingStatus(strict=False) as emu, kmock.Server(emu) as srv:
        url = str(srv.url).rstrip("/")
        cluster = await setup(emu, superpods=1)
        metrics = OperatorMetrics()
        async with cluster.running(), running_operator(url, resync=120, metrics=metrics), \
                httpx.AsyncClient(base_url=url) as c:
            await c.post(MDS, json=ascend_md(replicas=1))
            await eventually(lambda: status(emu).get("observedGeneration") == 1, what="status after the retry")
            assert emu.conflicts == 0
            assert metrics.reconciles.labels("api-error")._value.get() == 1
            assert len(groups(emu)) == 1, "the retry converged on the group the failed pass created"
        emu.close_watches()


async def test_a_new_deployment_is_created_without_listing_children_and_later_passes_list_them(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=2)

    def child_lists(since: int) -> list[str]:
        return [r.resource.plural for r in list(emu._requests)[since:] if r.method.value == "GET" and r.resource
                and r.resource.plural in ("statefulsets", "services", "poddisruptionbudgets")
                and r.params.get("watch") not in ("true", "1")]

    async with cluster.running(), running_operator(url, resync=120), httpx.AsyncClient(base_url=url) as c:
        since = emu.request_count
        await c.post(MDS, json=ascend_md(replicas=1))
        await eventually(lambda: status(emu).get("observedGeneration") == 1, what="the first pass")
        assert len(groups(emu)) == 1 and child_lists(since) == [], "a deployment without status has no children"
        since = emu.request_count
        await c.patch(f"{MDS}/v4/scale", json={"spec": {"replicas": 2}}, headers=MERGE)
        await eventually(lambda: len(groups(emu)) == 2, what="the second group")
        assert sorted(child_lists(since)) == ["poddisruptionbudgets", "services", "statefulsets"]


def test_deployment_gauges_follow_each_status_and_a_deleted_deployment_is_set_again_when_it_returns() -> None:
    """observe() skips re-setting gauges whose values did not change; a change and a forget() still show."""
    metrics = OperatorMetrics()

    def gauge(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"namespace": "llm", "deployment": "a", **labels})

    ready = {"groups": [{"phase": "Ready"}], "placeableReplicas": 1,
             "conditions": [{"type": C.COND_READY, "status": "True"}]}
    metrics.observe("llm", "a", ready, 1)
    metrics.observe("llm", "a", ready, 1)
    assert gauge("supernode_operator_groups", phase="Ready") == 1
    assert gauge("supernode_operator_condition", condition=C.COND_READY) == 1
    metrics.observe("llm", "a", {**ready, "conditions": [{"type": C.COND_READY, "status": "False"}]}, 2)
    assert gauge("supernode_operator_condition", condition=C.COND_READY) == 0
    assert gauge("supernode_operator_desired_groups") == 2
    metrics.forget("llm", "a")
    assert gauge("supernode_operator_desired_groups") is None
    metrics.observe("llm", "a", ready, 1)
    assert gauge("supernode_operator_desired_groups") == 1, "after forget() the same values are exported again"
