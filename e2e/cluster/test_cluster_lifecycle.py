"""The chart and a tiny CPU ModelDeployment on a real cluster, in order: install → Ready → an OpenAI
request through the router Service → scale 1→2→1 → spec change rollout → kill a pod (whole group
recreated) → delete (clean) → uninstall (clean). Tests run in file order and share one release."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import yaml
from cluster_support import Cluster, port_forward, wait_for

from supernode.api import constants as C

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "supernode"
RELEASE = "supernode-e2e"
SYSTEM_NS = "supernode-e2e-system"
ENGINE_IMAGE = os.environ.get("SUPERNODE_E2E_ENGINE_IMAGE", "ghcr.io/supernode-io/supernode-engine-cpu:e2e")
READY_TIMEOUT = float(os.environ.get("SUPERNODE_E2E_READY_TIMEOUT", "600"))
MD = "tiny"
LWS = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")


@pytest.fixture(scope="module")
def helm_config(cluster: Cluster) -> Iterator[Any]:
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=SYSTEM_NS) as config:
        yield config


@pytest.fixture(scope="module")
def release(cluster: Cluster, helm_config: Any) -> Iterator[dict[str, Any]]:
    values = yaml.safe_load((Path(__file__).parent / "values-kind.yaml").read_text())
    helm_config.install(str(CHART), RELEASE, values, namespace=SYSTEM_NS, create_namespace=True,
                        wait="watcher", timeout=300)
    state: dict[str, Any] = {"installed": True}
    yield state
    if state["installed"]:
        helm_config.uninstall(RELEASE, wait="watcher", timeout=300, ignore_not_found=True)


@pytest.fixture(scope="module")
def ns(cluster: Cluster, release: dict[str, Any]) -> Iterator[str]:
    from kubernetes import client

    name = f"supernode-e2e-{uuid.uuid4().hex[:6]}"
    cluster.core().create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    cluster.core().delete_namespace(name)


def md_manifest() -> dict[str, Any]:
    """examples/tiny-cpu.yaml with the engine image loaded into the cluster."""
    md = yaml.safe_load((REPO / "examples" / "tiny-cpu.yaml").read_text())
    md["metadata"]["name"] = MD
    md["spec"]["engine"]["image"] = ENGINE_IMAGE
    return md


def get_md(cluster: Cluster, ns: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.custom().get_namespaced_custom_object(C.GROUP, C.VERSION, ns, C.PLURAL, MD)
    return obj


def ready(md: dict[str, Any], replicas: int) -> bool:
    status = md.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return (status.get("observedGeneration") == md["metadata"]["generation"]
            and status.get("readyReplicas") == replicas and status.get("replicas") == replicas
            and conditions.get(C.COND_READY) == "True")


def pods(cluster: Cluster, ns: str, **labels: str) -> list[Any]:
    selector = ",".join([f"{C.LABEL_DEPLOYMENT}={MD}"] + [f"{k}={v}" for k, v in labels.items()])
    return [p for p in cluster.core().list_namespaced_pod(ns, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]


def leaders(cluster: Cluster, ns: str) -> list[Any]:
    return pods(cluster, ns, **{C.LABEL_ROLE: C.ROLE_LEADER})


def wait_ready(cluster: Cluster, ns: str, replicas: int) -> dict[str, Any]:
    md = wait_for(f"{MD} Ready with {replicas} group(s)",
                  lambda: (lambda m: m if ready(m, replicas) else None)(get_md(cluster, ns)), timeout=READY_TIMEOUT)
    wait_for(f"{replicas} leader pod(s)", lambda: len(leaders(cluster, ns)) == replicas, timeout=120)
    return md


def test_chart_installs_operator_router_and_crd(cluster: Cluster, release: dict[str, Any]) -> None:
    crd = cluster.extensions().read_custom_resource_definition(f"{C.PLURAL}.{C.GROUP}")
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    deployments = cluster.apps().list_namespaced_deployment(
        SYSTEM_NS, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
    assert {d.metadata.labels["app.kubernetes.io/component"] for d in deployments} == {"operator", "router"}
    for d in deployments:
        assert d.status.available_replicas == d.spec.replicas, d.metadata.name


def test_tiny_cpu_model_becomes_ready(cluster: Cluster, ns: str) -> None:
    cluster.custom().create_namespaced_custom_object(C.GROUP, C.VERSION, ns, C.PLURAL, md_manifest())
    md = wait_ready(cluster, ns, 1)
    assert md["status"]["selector"]
    group = pods(cluster, ns, **{C.LABEL_GROUP: "0"})
    assert len(group) == md_manifest()["spec"]["parallelism"]["tensor"], "one pod per rank (cpu: TP2 → 2 pods)"


def test_openai_request_through_the_router_service(cluster: Cluster, ns: str) -> None:
    service = f"{RELEASE}-router"  # the release name contains the chart name, so no "-supernode" infix
    with port_forward(cluster, SYSTEM_NS, service, 80) as url:
        body = {"model": "tiny-moe", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}

        def ask() -> dict[str, Any] | None:
            r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
            return r.json() if r.status_code == 200 else None  # 503 until discovery sees the leader

        answer = wait_for("a chat completion through the router", ask, timeout=120, interval=3)
        models = httpx.get(f"{url}/v1/models", timeout=10).json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["completion_tokens"] >= 1
    assert "tiny-moe" in {m["id"] for m in models["data"]}


def test_scale_one_two_one_removes_the_highest_group(cluster: Cluster, ns: str) -> None:
    custom = cluster.custom()
    custom.patch_namespaced_custom_object_scale(C.GROUP, C.VERSION, ns, C.PLURAL, MD, {"spec": {"replicas": 2}})
    wait_ready(cluster, ns, 2)
    assert {p.metadata.labels[C.LABEL_GROUP] for p in leaders(cluster, ns)} == {"0", "1"}
    custom.patch_namespaced_custom_object_scale(C.GROUP, C.VERSION, ns, C.PLURAL, MD, {"spec": {"replicas": 1}})
    wait_ready(cluster, ns, 1)
    wait_for("group 1 gone", lambda: not pods(cluster, ns, **{C.LABEL_GROUP: "1"}), timeout=300)
    assert [p.metadata.labels[C.LABEL_GROUP] for p in leaders(cluster, ns)] == ["0"]


def test_spec_change_rolls_the_group(cluster: Cluster, ns: str) -> None:
    before = {p.metadata.labels.get(C.LABEL_REVISION) for p in leaders(cluster, ns)}
    patch = {"spec": {"engine": {"env": {"SUPERNODE_E2E_REVISION": "2"}}}}
    cluster.custom().patch_namespaced_custom_object(C.GROUP, C.VERSION, ns, C.PLURAL, MD, patch)

    def rolled() -> bool:
        current = leaders(cluster, ns)
        return bool(current) and all(p.metadata.labels.get(C.LABEL_REVISION) not in before for p in current)

    wait_for("leaders on the new revision", rolled, timeout=READY_TIMEOUT)
    md = wait_ready(cluster, ns, 1)
    assert md["status"]["updatedReplicas"] == 1
    env = {e.name: e.value for p in pods(cluster, ns) for c in p.spec.containers for e in (c.env or [])}
    assert env.get("SUPERNODE_E2E_REVISION") == "2"


def test_killing_one_pod_recreates_the_whole_group(cluster: Cluster, ns: str) -> None:
    group = pods(cluster, ns, **{C.LABEL_GROUP: "0"})
    old_uids = {p.metadata.uid for p in group}
    # A non-leader rank (LWS labels it worker; StatefulSet workers carry no role label).
    worker = next(p for p in group if p.metadata.labels.get(C.LABEL_ROLE) != C.ROLE_LEADER)
    cluster.core().delete_namespaced_pod(worker.metadata.name, ns, grace_period_seconds=0)

    def recreated() -> bool:
        now = pods(cluster, ns, **{C.LABEL_GROUP: "0"})
        return len(now) == len(group) and not ({p.metadata.uid for p in now} & old_uids)

    wait_for("every pod of group 0 replaced (gang restart)", recreated, timeout=300)
    wait_ready(cluster, ns, 1)


def test_delete_removes_everything_it_owns(cluster: Cluster, ns: str) -> None:
    cluster.custom().delete_namespaced_custom_object(C.GROUP, C.VERSION, ns, C.PLURAL, MD)
    selector = f"{C.LABEL_DEPLOYMENT}={MD}"

    def leftovers() -> list[str]:
        core = cluster.core()
        found = [f"pod/{p.metadata.name}" for p in core.list_namespaced_pod(ns, label_selector=selector).items]
        found += [f"svc/{s.metadata.name}" for s in core.list_namespaced_service(ns, label_selector=selector).items]
        found += [f"sts/{s.metadata.name}" for s in
                  cluster.apps().list_namespaced_stateful_set(ns, label_selector=selector).items]
        found += [f"pdb/{p.metadata.name}" for p in
                  cluster.policy().list_namespaced_pod_disruption_budget(ns, label_selector=selector).items]
        try:
            lws = cluster.custom().list_namespaced_custom_object(*LWS[:2], ns, LWS[2], label_selector=selector)
            found += [f"lws/{o['metadata']['name']}" for o in lws["items"]]
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
        return found

    wait_for("no objects left after delete", lambda: not leftovers() or None, timeout=300)
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as gone:
        get_md(cluster, ns)
    assert gone.value.status == 404


def test_uninstall_is_clean(cluster: Cluster, helm_config: Any, release: dict[str, Any]) -> None:
    helm_config.uninstall(RELEASE, wait="watcher", timeout=300)
    release["installed"] = False
    selector = f"app.kubernetes.io/instance={RELEASE}"

    def leftovers() -> list[str]:
        apps, core = cluster.apps(), cluster.core()
        found = [d.metadata.name for d in apps.list_namespaced_deployment(SYSTEM_NS, label_selector=selector).items]
        found += [p.metadata.name for p in core.list_namespaced_pod(SYSTEM_NS, label_selector=selector).items]
        found += [r.metadata.name for r in cluster.rbac().list_cluster_role(label_selector=selector).items]
        found += [b.metadata.name for b in cluster.rbac().list_cluster_role_binding(label_selector=selector).items]
        return found

    wait_for("release objects gone", lambda: not leftovers() or None, timeout=180)
    # Helm never deletes CRDs from crds/ (that would delete every ModelDeployment): they stay.
    cluster.extensions().read_custom_resource_definition(f"{C.PLURAL}.{C.GROUP}")
