"""The chart renders with the real Helm library, lints clean, and every object is valid Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helm_chart_support import CHART, EXAMPLES, NAMESPACE, RELEASE, Objects, find, load_values, one

from supernode.router.config import RouterConfig

# Kinds from CRDs the Kubernetes OpenAPI schemas cannot know; each must come from a known CRD.
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
K8S_VERSION = kubernetes_validate.utils.latest_version()  # the newest schemas shipped (a current release)

# Every optional feature on at once, so one render covers every template branch that adds objects.
ALL_ON: dict[str, Any] = {
    "operator": {"verbose": True, "supernodeLabel": "example.com/superpod",
                 "faultConditions": {"GpuXidError": "rebuild"}, "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "node-role", "operator": "In", "values": ["infra"]}]}]}}}},
    "router": {"tenants": {"inline": "tenants: []\n"}},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                   "kubeStateMetrics": {"serviceAccount": {"name": "kube-state-metrics", "namespace": "monitoring"}}},
    "networkPolicy": {"enabled": True, "routerIngressFrom": [{"podSelector": {"matchLabels": {"a": "b"}}}]},
}
NAMESPACED_WATCH: dict[str, Any] = {
    "operator": {"watchNamespaces": ["llm", "batch"]},
    "router": {"discovery": {"namespace": "llm"}},
}
PERSISTENT_LEDGER: dict[str, Any] = {
    "router": {"replicas": 1, "autoscaling": {"enabled": False}, "pdb": {"enabled": False},
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
    for name, values in [("default", None), ("all-on", ALL_ON)] + [(p.name, load_values(p)) for p in EXAMPLES]:
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
    assert names == {"modeldeployments.supernode.io"}


def test_default_install_has_the_control_plane(render: Any) -> None:
    objects = render({})
    operator = one(objects, "Deployment", "-operator")
    router = one(objects, "Deployment", "-router")
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate" and operator["spec"]["replicas"] == 2
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args and "--standalone" not in args and "--all-namespaces" in args
    assert f"--lease-namespace={NAMESPACE}" in args
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # the Lease holder identity
    pdb = one(objects, "PodDisruptionBudget", "-operator")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= operator["spec"]["template"]["metadata"][
        "labels"].items()
    # local state + SQLite ledger (the defaults): exactly one router, no HPA, no PDB over it
    assert router["spec"]["replicas"] == 1
    assert not find(objects, "HorizontalPodAutoscaler") and not find(objects, "PodDisruptionBudget", "-router")
    svc = one(objects, "Service", "-router")
    assert svc["spec"]["selector"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    assert not find(objects, "ServiceMonitor") and not find(objects, "PrometheusRule")
    assert not find(objects, "NetworkPolicy")
    assert one(objects, "ConfigMap", "-dashboard")


def test_operator_without_leader_election_is_one_standalone_replica(render: Any) -> None:
    objects = render({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}})
    operator = one(objects, "Deployment", "-operator")
    assert operator["spec"]["strategy"]["type"] == "Recreate" and operator["spec"]["replicas"] == 1
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--standalone", "--all-namespaces"] and "--leader-elect" not in args
    assert not find(objects, "PodDisruptionBudget", "-operator")
    assert not find(objects, "Role", "-leader-election")


def test_operator_passes_its_options(render: Any) -> None:
    operator = one(render(ALL_ON), "Deployment", "-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["supernode", "operator"]
    assert container["args"][0] == "--leader-elect"
    assert {"--verbose", "--supernode-label=example.com/superpod", "--resync=10", "--lease-duration=15",
            "--renew-deadline=10", "--retry-period=2", "--fault-condition=GpuXidError=rebuild"} <= set(
        container["args"])
    probe_port = container["livenessProbe"]["httpGet"]["port"]
    assert any(p["name"] == probe_port for p in container["ports"])
    assert f"--liveness=http://0.0.0.0:{container['ports'][0]['containerPort']}/healthz" in container["args"]


def test_namespaced_watch_uses_roles(render: Any) -> None:
    objects = render(NAMESPACED_WATCH)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in find(objects, "Role")}
    assert roles == {("llm", f"{RELEASE}-supernode-operator"), ("batch", f"{RELEASE}-supernode-operator"),
                     ("llm", f"{RELEASE}-supernode-router"),
                     (NAMESPACE, f"{RELEASE}-supernode-operator-leader-election"),
                     ("kube-system", f"{RELEASE}-supernode-operator-device-info"),
                     (NAMESPACE, f"{RELEASE}-supernode-operator-routers")}
    args = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=llm" in args and "--namespace=batch" in args and "--all-namespaces" not in args
    assert "--device-info-namespace=kube-system" in args
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
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    objects: Objects = render(ALL_ON)
    for obj in objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, obj["kind"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "supernode", obj["kind"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta, f"{obj['kind']} is cluster-scoped"
        else:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']} lacks the release namespace"


SHARED_ROUTER: dict[str, Any] = {
    "autoscaling": {"enabled": True}, "pdb": {"enabled": True},
    "state": {"type": "redis", "redis": {"url": "redis://cache:6379/0", "existingSecret": "rs", "passwordKey": "pw",
                                         "failPolicy": "failClosed"}},
    "ledger": {"type": "postgres", "postgres": {"existingSecret": "pg", "dsnKey": "dsn", "schema": "billing"},
               "persistence": {"enabled": False}},
}


def test_shared_state_router_fleet(render: Any) -> None:
    """Redis state + PostgreSQL ledger: HPA and PDB allowed; secrets only through env from Secrets."""
    objects = render({"router": SHARED_ROUTER, "monitoring": {"prometheusRule": {"enabled": True}}})
    router = one(objects, "Deployment", "-router")
    assert "replicas" not in router["spec"], "the HPA owns router replicas"
    assert one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == router["metadata"]["name"]
    pdb = one(objects, "PodDisruptionBudget", "-router")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SUPERNODE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "rs", "key": "pw"}
    assert env["SUPERNODE_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "dsn"}
    assert env["SUPERNODE_ROUTER_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    config = yaml.safe_load(one(objects, "ConfigMap", "-router")["data"]["router.yaml"])
    parsed = RouterConfig.model_validate(config)
    assert parsed.state.type == "redis" and config["state"]["passwordEnv"] == "SUPERNODE_REDIS_PASSWORD"
    assert config["state"]["failPolicy"] == "failClosed"
    assert config["metering"]["ledger"] == {"type": "postgres", "dsnEnv": "SUPERNODE_POSTGRES_DSN",
                                            "schema": "billing",
                                            "spoolPath": "/var/lib/supernode/ledger/ledger-spool.sqlite3"}
    assert not find(objects, "PersistentVolumeClaim"), "the ledger PVC is for sqlite only"
    rules = {r["alert"] for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert {"SupernodeRouterStateBackendDown", "SupernodeRouterLedgerSpoolGrowing"} <= rules


def test_local_state_has_no_shared_state_alerts(render: Any) -> None:
    rules = {r["alert"] for g in one(render({"monitoring": {"prometheusRule": {"enabled": True}}}),
                                       "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert "SupernodeRouterStateBackendDown" not in rules
