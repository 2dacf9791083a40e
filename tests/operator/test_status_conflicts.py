"""Two writers of status.conditions (the reconciler and the autoscaler) do not lose each other's updates: each
status patch carries the resourceVersion its writer read, a stale one is refused (409), and the retry from the
latest object keeps both writers' conditions. Against the test Kubernetes API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from k8s_emulator import K8sEmulator
from test_operator_lifecycle import MDS, ascend_md, setup, status

from supernode.operator import autoscaling as S
from supernode.operator.kube import ApiError, KubeClient, load_access
from supernode.operator.reconcile import Reconciler


def scaling_active(generation: int = 1) -> dict[str, Any]:
    return {"type": S.COND_SCALING_ACTIVE, "status": "True", "reason": "Deciding", "message": "steady",
            "observedGeneration": generation, "lastTransitionTime": "2026-12-03T10:00:00Z"}


async def test_a_pass_that_read_a_stale_object_does_not_overwrite_another_writers_condition(
        k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    cluster = await setup(emu, superpods=2)
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.post(MDS, json=ascend_md(replicas=1))).status_code == 201
    client = KubeClient(load_access(url))
    try:
        read = emu.get("modeldeployments", "llm", "v4", "supernode.io")
        assert read is not None
        # The autoscaler writes its condition after the reconciler read the object.
        other = await client.patch_status("llm", "v4", {"conditions": [scaling_active()]},
                                          resource_version=read["metadata"]["resourceVersion"])
        assert other["metadata"]["resourceVersion"] != read["metadata"]["resourceVersion"]
        reconciler = Reconciler(client)
        nodes = [n for n in cluster.emu.objects_of("nodes", "", None)]
        with pytest.raises(ApiError) as refused:
            await reconciler.reconcile(read, lambda: nodes, list)
        assert refused.value.status == 409
        assert [c["type"] for c in status(emu)["conditions"]] == [S.COND_SCALING_ACTIVE], "nothing overwritten"
        latest = emu.get("modeldeployments", "llm", "v4", "supernode.io")
        assert latest is not None
        result = await reconciler.reconcile(latest, lambda: nodes, list)
        assert result.status is not None
        kinds = {c["type"] for c in status(emu)["conditions"]}
        assert {S.COND_SCALING_ACTIVE, "Ready", "Progressing", "CapacityLimited"} <= kinds, kinds
        # And the other way round: a write from what was read before the reconciler's write is refused.
        with pytest.raises(ApiError) as stale:
            await client.patch_status("llm", "v4", {"conditions": [scaling_active(2)]},
                                      resource_version=latest["metadata"]["resourceVersion"])
        assert stale.value.status == 409
        assert "Ready" in {c["type"] for c in status(emu)["conditions"]}
    finally:
        await client.close()


async def test_an_autoscaler_decision_from_a_stale_object_is_refused_then_written_from_the_latest(
        k8s: tuple[K8sEmulator, str]) -> None:
    """The autoscaler's status write carries the resourceVersion it decided from: after the reconciler wrote
    status, a tick from the older object is refused (409) and leaves the reconciler's conditions; the next tick
    from the latest object adds ScalingActive beside them."""
    import socket

    from builders import operator_md

    from supernode.operator.scaler import Autoscaler, AutoscalerConfig

    emu, url = k8s
    cluster = await setup(emu, superpods=2)
    body = (operator_md("v4").engine("vllm").accelerator("ascend-910c", 16).parallelism(tensor=16, data=2)
            .placement(supernode="Required").replicas(1).autoscaling(1, 2).dict())
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.post(MDS, json=body)).status_code == 201
    with socket.socket() as s:  # signals from a Prometheus that is not there: the size is held, the condition set
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = KubeClient(load_access(url))
    scaler = Autoscaler(client=client, config=AutoscalerConfig(prometheus_url=f"http://127.0.0.1:{port}",
                                                               timeout_seconds=0.5))
    try:
        stale = emu.get("modeldeployments", "llm", "v4", "supernode.io")
        assert stale is not None
        nodes = list(cluster.emu.objects_of("nodes", "", None))
        await Reconciler(client).reconcile(stale, lambda: nodes, list)
        before = [c["type"] for c in status(emu)["conditions"]]
        with pytest.raises(ApiError) as refused:
            await scaler.tick(stale, nodes, [], [stale])
        assert refused.value.status == 409
        assert [c["type"] for c in status(emu)["conditions"]] == before, "the reconciler's conditions stay"
        latest = emu.get("modeldeployments", "llm", "v4", "supernode.io")
        assert latest is not None
        await scaler.tick(latest, nodes, [], [latest])
        kinds = [c["type"] for c in status(emu)["conditions"]]
        assert kinds == [*before, S.COND_SCALING_ACTIVE], kinds
    finally:
        await scaler.close()
        await client.close()
