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
