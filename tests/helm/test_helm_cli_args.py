"""The command lines the chart renders are accepted by the real `supernode` CLI parser: a flag the CLI
drops or renames fails here, not in a crash-looping pod. (Needs the operator and router CLIs.)"""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart_support import one

from supernode.cli.main import build_parser

OPERATOR_VARIANTS = {
    "leader election": {},
    "standalone": {"operator": {"replicas": 1, "leaderElection": {"enabled": False}}},
    "all options": {"operator": {"verbose": True, "supernodeLabel": "example.com/superpod", "resyncSeconds": 5,
                                 "extraArgs": ["--context=ignored"]}},
    "namespaced": {"operator": {"watchNamespaces": ["llm", "batch"]}},
    "no metrics": {"operator": {"metrics": {"enabled": False, "port": 9090}}},
}


def container(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return one(objects, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]


def operator_argv(c: dict[str, Any]) -> list[str]:
    assert c["command"][0] == "supernode", c["command"]
    return [*c["command"][1:], *c["args"]]


@pytest.mark.parametrize("variant", sorted(OPERATOR_VARIANTS))
def test_operator_command_line_parses(render: Any, variant: str) -> None:
    argv = operator_argv(container(render(OPERATOR_VARIANTS[variant]), "-operator"))
    args = build_parser().parse_args(argv)
    assert args.command == "operator" and callable(args.func)
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.standalone == (variant == "standalone") and args.leader_elect == (variant != "standalone")
    if args.leader_elect:
        from supernode.operator.leader import ElectionConfig

        ElectionConfig(args.lease_name, args.lease_namespace, "pod", lease_duration=args.lease_duration,
                       renew_deadline=args.renew_deadline, retry_period=args.retry_period)  # timings are valid
    assert args.all_namespaces != bool(args.namespace), "exactly one of -A / --namespace"
    ports = {p["name"]: p["containerPort"] for p in container(render(OPERATOR_VARIANTS[variant]), "-operator")["ports"]}
    if variant == "no metrics":
        assert args.metrics_port is None and "metrics" not in ports
    else:
        assert args.metrics_port == 9090 == ports["metrics"], "the metrics port the CLI binds is the named port"


def test_router_command_line_parses(render: Any) -> None:
    c = container(render({}), "-router")
    assert c["command"] == ["supernode", "router"]
    args = build_parser().parse_args(["router", *c["args"]])
    assert args.config == "/etc/supernode/router/router.yaml" and args.log_level == "info"


def test_the_autoscaler_reads_the_router_ops_port_through_its_metrics_service(render: Any) -> None:
    objects = render({"router": {"metricsPort": 9191},
                      "networkPolicy": {"enabled": True,
                                        "routerMetricsFrom": [{"namespaceSelector": {"matchLabels": {"m": "1"}}}]}})
    args = build_parser().parse_args(operator_argv(container(objects, "-operator")))
    assert args.autoscale and args.router_ops_port == 9191
    service = one(objects, "Service", "-router-metrics")
    assert args.router_service == service["metadata"]["name"]
    assert [p["port"] for p in service["spec"]["ports"]] == [9191]
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-router"))
    ops = next(rule for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == "metrics")
    operator_labels = one(objects, "Deployment", "-operator")["spec"]["selector"]["matchLabels"]
    assert {"podSelector": {"matchLabels": operator_labels}} in ops["from"], "the operator may read the signals"


def test_the_drain_watch_reads_the_routers_without_the_autoscaler(render: Any) -> None:
    """Idle draining groups are found by asking the routers whether the autoscaler runs or not; 0 turns it
    off (and, with the autoscaler off too, the operator's network access to the ops port)."""
    values = {"operator": {"autoscaler": {"enabled": False}}, "router": {"metricsPort": 9191},
              "networkPolicy": {"enabled": True, "routerMetricsFrom": [{"namespaceSelector": {"matchLabels": {}}}]}}
    objects = render(values)
    args = build_parser().parse_args(operator_argv(container(objects, "-operator")))
    assert not args.autoscale and args.drain_poll == 5 and args.router_ops_port == 9191
    assert args.router_service == one(objects, "Service", "-router-metrics")["metadata"]["name"]
    operator_labels = one(objects, "Deployment", "-operator")["spec"]["selector"]["matchLabels"]

    def reader_allowed(objs: Any) -> bool:
        policy = next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-router"))
        ops = next(rule for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == "metrics")
        return {"podSelector": {"matchLabels": operator_labels}} in ops["from"]

    assert reader_allowed(objects)
    values["operator"]["drainPollSeconds"] = 0
    objects = render(values)
    assert build_parser().parse_args(operator_argv(container(objects, "-operator"))).drain_poll == 0
    assert not reader_allowed(objects)


def test_the_autoscaler_reads_prometheus_when_the_chart_names_one(render: Any) -> None:
    default = build_parser().parse_args(operator_argv(container(render({}), "-operator")))
    assert default.autoscale_prometheus_url == "" and default.autoscale_prometheus_selector == "", \
        "by default the routers are read directly"
    objects = render({"operator": {"autoscaler": {"prometheus": {
        "url": "http://prometheus.monitoring:9090", "selector": 'namespace="supernode-system", job="router"'}}}})
    args = build_parser().parse_args(operator_argv(container(objects, "-operator")))
    assert args.autoscale and args.autoscale_prometheus_url == "http://prometheus.monitoring:9090"
    assert args.autoscale_prometheus_selector == 'namespace="supernode-system", job="router"'
