"""The command lines the chart renders are accepted by the real `supernode` CLI parser: a flag the CLI
drops or renames fails here, not in a crash-looping pod. (Needs the operator and router CLIs.)"""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart_support import one

from supernode.cli.main import build_parser

OPERATOR_VARIANTS = {
    "standalone": {},
    "peering": {"operator": {"replicas": 2, "ha": {"mode": "peering"}}},
    "namespaced": {"operator": {"watchNamespaces": ["llm", "batch"]}},
}


def container(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return one(objects, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]


def operator_argv(c: dict[str, Any]) -> list[str]:
    """argv after `supernode`: the plain command, or what the peering shell wrapper execs."""
    if c["command"][:2] == ["/bin/sh", "-c"]:
        script, _argv0, *args = c["args"]
        assert script.startswith('exec supernode operator "$@" --priority '), script
        return ["operator", *args, "--priority", "1234567"]
    assert c["command"][0] == "supernode", c["command"]
    return [*c["command"][1:], *c["args"]]


@pytest.mark.parametrize("variant", sorted(OPERATOR_VARIANTS))
def test_operator_command_line_parses(render: Any, variant: str) -> None:
    argv = operator_argv(container(render(OPERATOR_VARIANTS[variant]), "-operator"))
    args = build_parser().parse_args(argv)
    assert args.command == "operator" and callable(args.func)


def test_router_command_line_parses(render: Any) -> None:
    c = container(render({}), "-router")
    assert c["command"] == ["supernode", "router"]
    args = build_parser().parse_args(["router", *c["args"]])
    assert args.config == "/etc/supernode/router/router.yaml" and args.log_level == "info"
