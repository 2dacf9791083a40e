"""`supernode operator [-A | --namespace NS ...]`: run the Kubernetes operator (kopf), or preview a rollout.

`supernode operator preview-rollout FILE` prints the group-by-group steps a spec change would take,
from the same rollout planner the operator runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator", help="run the Kubernetes operator", description=__doc__.splitlines()[0])
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeat)")
    parser.add_argument("--standalone", action="store_true", help="no peering with other operator replicas")
    parser.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--server", default=None, help="API server URL (default: in-cluster or kubeconfig)")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument("--resync", type=float, default=10.0, help="seconds between health/drift resyncs")
    parser.add_argument("--supernode-label", default=None, help="node label with the Ascend SuperPoD id")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-addr", default="0.0.0.0", help="address for --metrics-port")
    parser.add_argument("--log-format", choices=("plain", "full", "json"), default="full",
                        help="log format (json: one structured object per line)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="operator_command", metavar="SUBCOMMAND")
    preview = sub.add_parser("preview-rollout", help="print the steps a rollout of FILE would take")
    preview.add_argument("file", type=Path, help="ModelDeployment YAML")
    preview.add_argument("--ready-seconds", type=float, default=180.0, help="time a new group takes to be ready")
    preview.set_defaults(func=preview_rollout)


def run(args: argparse.Namespace) -> int:
    if args.all_namespaces and args.namespace:
        print("supernode operator: use either -A or --namespace", file=sys.stderr)
        return 2
    import kopf

    from supernode.operator.handlers import OperatorConfig, build_registry

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    registry = build_registry(OperatorConfig(server=args.server, context=args.context, resync_seconds=args.resync,
                                             supernode_label=args.supernode_label, metrics_port=args.metrics_port,
                                             metrics_addr=args.metrics_addr))
    kopf.run(registry=registry, clusterwide=not args.namespace, namespaces=args.namespace,
             standalone=args.standalone, liveness_endpoint=args.liveness)
    return 0


def preview_rollout(args: argparse.Namespace) -> int:
    from supernode.cli.plan import PlanInputError, load_deployments
    from supernode.operator.preview import render, simulate

    try:
        deployments = load_deployments(args.file)
    except PlanInputError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    for md in deployments:
        r = md.spec.rollout
        print(f"{md.metadata.name}: {md.spec.replicas} groups, maxSurge {r.max_surge}, maxUnavailable "
              f"{r.max_unavailable}, drain {r.drain_timeout_seconds}s, new group ready after {args.ready_seconds:.0f}s")
        ticks = max(1, round(args.ready_seconds / 60.0))
        print(render(simulate(md, ready_ticks=ticks, tick_seconds=60.0), md.spec.replicas))
    return 0
