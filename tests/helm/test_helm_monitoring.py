"""Alerts and dashboard panels query metrics that exist: supernode_router_* / supernode_operator_* names
must be registered by the router's / operator's code, vllm:* names must be ones vLLM (and our
vLLM-compatible engine) export. A renamed metric breaks this test, not a dashboard in production."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from helm_chart_support import CHART, REPO, one

from supernode.api import crdgen

# vLLM's documented Prometheus names (the engine contract in ARCHITECTURE.md uses them).
VLLM_METRICS = {
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
    "vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
    "vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds", "vllm:request_success_total", "vllm:num_preemptions_total",
}
METRIC = re.compile(r"\b((?:supernode_[a-z_]+)|(?:vllm:[a-z_]+))\b")
PROMQL_WORDS = {"supernode_router", "supernode_operator"}
ALERTS = {"SupernodeGroupDegraded", "SupernodeCapacityLimited", "SupernodeQueueSaturated", "SupernodeRouterErrorRate",
          "SupernodeOperatorReconcileErrors", "SupernodeOperatorSlowReconcile", "SupernodeGroupsFailed",
          "SupernodeOperatorNoLeader"}
ON = {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


def registered_names(root: Path) -> set[str]:
    """Names passed to prometheus_client constructors in a component's source."""
    names: set[str] = set()
    pattern = re.compile(r"(Counter|Gauge|Histogram|Summary)\(\s*\"([a-z_:]+)\"", re.S)
    for path in root.rglob("*.py"):
        names |= {m.group(2) for m in pattern.finditer(path.read_text())}
    return names


def exposed(names: set[str]) -> set[str]:
    """What Prometheus sees: counters as X_total (prometheus_client adds it), histograms' series."""
    out = set()
    for n in names:
        base = n.removesuffix("_total")
        out |= {n, f"{base}_total", f"{n}_bucket", f"{n}_sum", f"{n}_count"}
    return out


KSM_CONFIG = CHART / "files" / "kube-state-metrics-modeldeployments.yaml"


def ksm_metrics() -> dict[str, list[list[str]]]:
    """kube-state-metrics custom-resource metric name -> the object paths it reads."""
    out: dict[str, list[list[str]]] = {}
    for resource in yaml.safe_load(KSM_CONFIG.read_text())["spec"]["resources"]:
        prefix = resource["metricNamePrefix"]
        common = list(resource.get("labelsFromPath", {}).values())
        for metric in resource["metrics"]:
            gauge = metric["each"]["gauge"]
            paths = [gauge["path"], *common]
            paths += [gauge["path"] + p for p in gauge.get("labelsFromPath", {}).values()]
            if "valueFrom" in gauge:
                paths.append(gauge["path"] + gauge["valueFrom"])
            out[f"{prefix}_{metric['name']}"] = paths
    return out


def known_metrics() -> set[str]:
    router = registered_names(REPO / "router" / "supernode" / "router")
    operator = registered_names(REPO / "operator" / "supernode" / "operator")
    vllm = VLLM_METRICS | {f"{n}_bucket" for n in VLLM_METRICS} | {f"{n}_count" for n in VLLM_METRICS}
    return exposed(router) | exposed(operator) | vllm | set(ksm_metrics())


def schema_has(schema: dict[str, Any], path: list[str]) -> bool:
    node = schema
    for part in path:
        if node.get("type") == "array":
            node = node["items"]
        props = node.get("properties", {})
        if part not in props:
            return part in {"name", "namespace"} and node is schema  # metadata is not in the CRD schema
        node = props[part]
    return True


def test_kube_state_metrics_config_reads_fields_the_crd_has(render: Any) -> None:
    root = crdgen.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    metrics = ksm_metrics()
    assert metrics
    for name, paths in metrics.items():
        for path in paths:
            if path[0] == "metadata":
                continue
            assert schema_has(root, path), f"{name}: {'.'.join(path)} is not in the ModelDeployment schema"
    cm = one(render({}), "ConfigMap", "-ksm-config")
    assert yaml.safe_load(cm["data"]["modeldeployments.yaml"]) == yaml.safe_load(KSM_CONFIG.read_text())


def used_metrics(text: str) -> set[str]:
    return {m for m in METRIC.findall(text) if m not in PROMQL_WORDS}


def test_prometheus_rule_has_the_alerts_and_queries_real_metrics(render: Any) -> None:
    rule = one(render(ON), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) >= ALERTS
    known = known_metrics()
    for name, alert in alerts.items():
        used = used_metrics(alert["expr"])
        assert used, f"{name} queries no metric"
        assert used <= known, f"{name} queries unknown metrics {sorted(used - known)}"
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}
        assert alert["annotations"]["summary"]


def test_dashboard_is_valid_grafana_json_with_router_and_engine_panels(render: Any) -> None:
    cm = one(render({}), "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["supernode.json"])
    assert dash["uid"] and dash["title"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = set().union(*(used_metrics(e) for e in exprs))
    assert used <= known_metrics(), f"dashboard queries unknown metrics {sorted(used - known_metrics())}"
    assert any(m.startswith("supernode_router_") for m in used) and any(m.startswith("vllm:") for m in used)
    assert any(m.startswith("supernode_operator_") for m in used)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert json.loads((CHART / "dashboards" / "supernode.json").read_text()) == dash


def test_monitors_select_the_right_pods(render: Any) -> None:
    objects = render(ON)
    router = one(objects, "ServiceMonitor", "-router")
    svc = one(objects, "Service", "-router-metrics")
    public = one(objects, "Service", "-router")
    assert router["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert not router["spec"]["selector"]["matchLabels"].items() <= public["metadata"]["labels"].items()
    assert router["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    # issue 10: /metrics is on the ops port, which the public Service does not expose; probes use it too
    assert [p["name"] for p in public["spec"]["ports"]] == ["http"]
    container = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"] for p in container["ports"]} == {"http", "metrics"}
    assert container["livenessProbe"]["httpGet"]["port"] == container["readinessProbe"]["httpGet"]["port"] == "metrics"
    engines = one(objects, "PodMonitor")
    assert engines["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "supernode-operator", "supernode.io/role": "leader"}
    assert engines["spec"]["podMetricsEndpoints"][0]["port"] == "http"  # the engine container's port name
    assert yaml.safe_dump(engines)  # round-trips


def test_engine_pod_monitor_matches_what_the_operator_renders(render: Any) -> None:
    """The operator's golden manifests (tests/operator/golden): LWS leader templates carry the PodMonitor's
    labels (StatefulSet leaders get `role: leader` patched on by the operator) and name the port."""
    selector = one(render(ON), "PodMonitor")["spec"]["selector"]["matchLabels"]
    port = one(render(ON), "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"]
    goldens = sorted((REPO / "tests" / "operator" / "golden").glob("*.yaml"))
    assert goldens, "operator golden manifests not found"
    leader_templates = []
    for path in goldens:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "LeaderWorkerSet":
                leader_templates.append(doc["spec"]["leaderWorkerTemplate"]["leaderTemplate"])
            elif doc and doc["kind"] == "StatefulSet":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert {k: v for k, v in selector.items() if k != "supernode.io/role"}.items() <= labels.items()
                leader_templates.append(doc["spec"]["template"])
    assert any("supernode.io/role" in t["metadata"]["labels"] for t in leader_templates)
    for template in leader_templates:
        labels = template["metadata"]["labels"]
        if "supernode.io/role" in labels:
            assert selector.items() <= labels.items(), labels
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert port in ports, ports


def test_operator_metrics_are_scraped_through_its_service(render: Any) -> None:
    objects = render(ON)
    monitor = one(objects, "ServiceMonitor", "-operator")
    svc = one(objects, "Service", "-operator-metrics")
    pod = one(objects, "Deployment", "-operator")["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"] == svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert endpoint["honorLabels"] is True  # supernode_operator_groups' namespace is the ModelDeployment's
    container = pod["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert "--metrics-port=9090" in container["args"]
    policy = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy", "-operator")
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["metrics"]


def test_operator_metrics_can_be_turned_off(render: Any) -> None:
    off = {"operator": {"metrics": {"enabled": False, "port": 9090}}, "networkPolicy": {"enabled": True}}
    objects = render({**ON, **off})
    assert not [o for o in objects if o["kind"] == "ServiceMonitor" and o["metadata"]["name"].endswith("-operator")]
    assert not [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-operator-metrics")]
    rules = {r["alert"] for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert "SupernodeOperatorReconcileErrors" not in rules and "SupernodeGroupDegraded" in rules
    assert "SupernodeOperatorNoLeader" not in rules
    assert one(objects, "NetworkPolicy", "-operator")["spec"]["ingress"] == []
