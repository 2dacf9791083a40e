"""The chart renders with the real Helm library, lints clean, and every object is valid Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helm_chart_support import CHART, EXAMPLES, NAMESPACE, RELEASE, Objects, find, load_values, one

# Kinds from CRDs the Kubernetes OpenAPI schemas cannot know; each must come from a known CRD.
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ClusterKopfPeering": "kopf.dev/v1",
    "KopfPeering": "kopf.dev/v1",
}
K8S_VERSION = kubernetes_validate.utils.latest_version()  # the newest schemas shipped (a current release)

# Every optional feature on at once, so one render covers every template branch that adds objects.
ALL_ON: dict[str, Any] = {
    "operator": {"replicas": 2, "ha": {"mode": "peering"}},
    "router": {"tenants": {"inline": "tenants: []\n"}},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                   "kubeStateMetrics": {"serviceAccount": {"name": "kube-state-metrics", "namespace": "monitoring"}}},
    "networkPolicy": {"enabled": True, "routerIngressFrom": [{"podSelector": {"matchLabels": {"a": "b"}}}]},
}
NAMESPACED_WATCH: dict[str, Any] = {
    "operator": {"watchNamespaces": ["llm", "batch"], "replicas": 2, "ha": {"mode": "peering"}},
    "router": {"discovery": {"namespace": "llm"}},
}
PERSISTENT_LEDGER: dict[str, Any] = {
    "router": {"replicas": 1, "autoscaling": {"enabled": False},
               "ledger": {"persistence": {"enabled": True, "storageClassName": "fast"}}},
}

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "all-on": ALL_ON,
    "namespaced": NAMESPACED_WATCH,
    "persistent-ledger": PERSISTENT_LEDGER,
    **{p.stem: load_values(p) for p in EXAMPLES},
}


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"values-ascend-superpod.yaml", "values-h200.yaml"}


def test_lint_passes_for_default_and_examples(tmp_path: Path) -> None:
    for name, values in [("default", None)] + [(p.name, load_values(p)) for p in EXAMPLES]:
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"helm lint ({name}): {problems}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_validates_against_kubernetes_openapi(render: Any, variant: str) -> None:
    objects = render(VARIANTS[variant])
    assert objects, "nothing rendered"
    for obj in objects:
        where = f"{variant}: {obj['kind']}/{obj['metadata'].get('name')}"
        if obj["kind"] in CUSTOM_KINDS:
            assert obj["apiVersion"] == CUSTOM_KINDS[obj["kind"]], where
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_chart_crds_validate_as_custom_resource_definitions(chart: Any) -> None:
    crds = chart.crds
    names = set()
    for entry in crds:
        for doc in yaml.safe_load_all(entry["data"]):
            if not doc:
                continue
            assert doc["kind"] == "CustomResourceDefinition", entry["filename"]
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            names.add(doc["metadata"]["name"])
    assert names == {"modeldeployments.supernode.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


def test_default_install_has_the_control_plane(render: Any) -> None:
    objects = render({})
    operator = one(objects, "Deployment", "-operator")
    router = one(objects, "Deployment", "-router")
    assert operator["spec"]["strategy"]["type"] == "Recreate"  # standalone: never two at once
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args and "--all-namespaces" in args
    assert one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == router["metadata"]["name"]
    pdb = one(objects, "PodDisruptionBudget", "-router")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    svc = one(objects, "Service", "-router")
    assert svc["spec"]["selector"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    assert "replicas" not in router["spec"], "the HPA owns router replicas"
    assert not find(objects, "ServiceMonitor") and not find(objects, "PrometheusRule")
    assert not find(objects, "NetworkPolicy") and not find(objects, "ClusterKopfPeering")
    assert one(objects, "ConfigMap", "-dashboard")


def test_peering_mode_gives_replicas_distinct_priorities(render: Any) -> None:
    objects = render(ALL_ON)
    operator = one(objects, "Deployment", "-operator")
    peering = one(objects, "ClusterKopfPeering")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    script, _argv0, *args = container["args"]
    assert script.startswith('exec supernode operator "$@" --priority "$(')  # derived per pod from POD_NAME
    assert f"--peering={peering['metadata']['name']}" in args
    assert "--standalone" not in args
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"
    assert {e["name"] for e in container["env"]} >= {"POD_NAME"}


def test_namespaced_watch_uses_roles_and_namespaced_peering(render: Any) -> None:
    objects = render(NAMESPACED_WATCH)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in find(objects, "Role")}
    assert roles == {("llm", f"{RELEASE}-supernode-operator"), ("batch", f"{RELEASE}-supernode-operator"),
                     ("llm", f"{RELEASE}-supernode-router")}
    assert {p["metadata"]["namespace"] for p in find(objects, "KopfPeering")} == {"llm", "batch"}
    args = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=llm" in args and "--namespace=batch" in args and "--all-namespaces" not in args
    assert not find(objects, "ClusterRole", "-router"), "a namespaced router needs no ClusterRole"


def test_tenants_secret_and_ledger_volume(render: Any) -> None:
    objects = render(ALL_ON)
    secret = one(objects, "Secret", "-tenants")
    router = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in router["volumes"]}
    assert volumes["tenants"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert "emptyDir" in volumes["ledger"]
    config = yaml.safe_load(one(objects, "ConfigMap", "-router")["data"]["router.yaml"])
    assert config["admission"]["tenantsFile"] == "/etc/supernode/tenants/tenants.yaml"

    persistent = render(PERSISTENT_LEDGER)
    pvc = one(persistent, "PersistentVolumeClaim")
    deploy = one(persistent, "Deployment", "-router")
    assert deploy["spec"]["strategy"]["type"] == "Recreate" and deploy["spec"]["replicas"] == 1
    claim = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}["ledger"]
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == "fast"


def test_release_namespace_and_labels_everywhere(render: Any) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    objects: Objects = render(ALL_ON)
    for obj in objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, obj["kind"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "supernode", obj["kind"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta, f"{obj['kind']} is cluster-scoped"
        else:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']} lacks the release namespace"
