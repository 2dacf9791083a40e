"""`supernode operator [-A | --namespace NS ...]`: run the Kubernetes operator (kopf), or preview a rollout.

Leader election (`--leader-elect`, what the Helm chart runs): every replica competes for a
coordination.k8s.io Lease; only the holder runs the operator, the others wait as standbys; a leader that
loses the Lease exits 1 (its pod restarts as a standby). `--standalone`: no election, no peering (dev).

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
    parser.add_argument("--standalone", action="store_true",
                        help="no leader election and no peering: the only replica (local/dev)")
    election = parser.add_argument_group("leader election (run several replicas safely)")
    election.add_argument("--leader-elect", action="store_true",
                          help="run the operator only while holding the Lease (default off; on in the chart)")
    election.add_argument("--lease-name", default="supernode-operator", help="Lease name")
    election.add_argument("--lease-namespace", default=None,
                          help="Lease namespace (default: $POD_NAMESPACE, else 'default')")
    election.add_argument("--identity", default=None, help="holder identity (default: $POD_NAME, else host_pid)")
    election.add_argument("--lease-duration", type=float, default=15.0,
                          help="seconds a standby waits after the leader's last renewal before taking over")
    election.add_argument("--renew-deadline", type=float, default=10.0,
                          help="seconds the leader keeps trying to renew before it gives up leadership")
    election.add_argument("--retry-period", type=float, default=2.0, help="seconds between Lease attempts")
    parser.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--server", default=None, help="API server URL (default: in-cluster or kubeconfig)")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument("--resync", type=float, default=10.0, help="seconds between health/drift resyncs")
    parser.add_argument("--supernode-label", default=None, help="node label with the Ascend SuperPoD id")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-addr", default="0.0.0.0", help="address for --metrics-port")
    parser.add_argument("--group-network-policies", action="store_true",
                        help="render a NetworkPolicy per replica group: only the group's own pods may connect")
    parser.add_argument("--fault-condition", action="append", default=[], metavar="TYPE=ACTION",
                        help="a node condition that, when True, means the node's devices fail; ACTION is rebuild, "
                        "drain, restart or none (repeat; default NetworkUnavailable=rebuild)")
    parser.add_argument("--device-info-namespace", default="kube-system", metavar="NS",
                        help="namespace of the Ascend device plugin's mindx-dl-deviceinfo-<node> ConfigMaps, watched "
                        "there alone (needs list/watch on ConfigMaps in it); '' to not read them")
    routers = parser.add_argument_group("routers (their signals: idle draining groups, autoscaling)")
    routers.add_argument("--router-service", default="supernode-router-metrics",
                       help="a Service selecting the router replicas (the chart's ops Service)")
    routers.add_argument("--router-namespace", default=None, help="its namespace (default: $POD_NAMESPACE, else "
                         "supernode-system)")
    routers.add_argument("--router-ops-port", type=int, default=9090,
                         help="the router pods' ops port (server.metrics_port), which serves /autoscaling/signals")
    routers.add_argument("--drain-poll", type=float, default=5.0, metavar="SECONDS",
                         help="while a group drains, ask the routers this often whether it is idle and delete it "
                         "then (0: off; a draining group then waits out rollout.drainTimeoutSeconds)")
    scale = parser.add_argument_group("autoscaling (spec.autoscaling takes effect; leader only)")
    scale.add_argument("--autoscale", action="store_true", help="run the autoscaler on router signals")
    scale.add_argument("--autoscale-interval", type=float, default=15.0, help="seconds between decisions")
    scale.add_argument("--autoscale-prometheus-url", default="", metavar="URL",
                       help="read the routers' supernode_router_pool_* series from this Prometheus (HTTP API) "
                       "instead of each router's /autoscaling/signals")
    scale.add_argument("--autoscale-prometheus-selector", default="", metavar="MATCHERS",
                       help='label matchers added to every query, e.g. namespace="supernode-system"')
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
    if args.standalone and args.leader_elect:
        print("supernode operator: --standalone means no leader election; drop one of them", file=sys.stderr)
        return 2
    election = None
    if args.leader_elect:
        try:
            election = _election_config(args)
        except ValueError as exc:
            print(f"supernode operator: {exc}", file=sys.stderr)
            return 2
    import kopf

    from supernode.operator.group_secrets import GroupKeys
    from supernode.operator.handlers import OperatorConfig, build_registry
    from supernode.operator.metrics import OperatorMetrics

    try:
        conditions = _fault_conditions(args.fault_condition)
    except ValueError as exc:
        print(f"supernode operator: --fault-condition: {exc}", file=sys.stderr)
        return 2
    try:
        drain = _drain_config(args)
    except ValueError as exc:
        print(f"supernode operator: {exc}", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    # With election the process owns the metrics from the start (a standby serves them too, with
    # supernode_operator_leader 0); kopf's startup handler then reuses them instead of binding again.
    metrics = OperatorMetrics() if election is not None else None
    registry = build_registry(OperatorConfig(server=args.server, context=args.context, resync_seconds=args.resync,
                                             supernode_label=args.supernode_label, metrics_addr=args.metrics_addr,
                                             metrics_port=args.metrics_port if metrics is None else None,
                                             metrics=metrics, keys=GroupKeys.from_env(),
                                             network_policies=args.group_network_policies,
                                             autoscaler=_autoscaler_config(args), fault_conditions=conditions,
                                             device_info_namespace=args.device_info_namespace or None,
                                             drain=drain))
    if election is None:
        kopf.run(registry=registry, clusterwide=not args.namespace, namespaces=args.namespace,
                 standalone=args.standalone, liveness_endpoint=args.liveness)
        return 0
    assert metrics is not None
    return _run_elected(args, registry, election, metrics)


def _fault_conditions(values: list[str]) -> dict[str, Any]:
    """TYPE=ACTION pairs over the defaults; ACTION none drops a condition."""
    from supernode.operator.faults import DEFAULT_FAULT_CONDITIONS, SEVERITY

    out: dict[str, Any] = dict(DEFAULT_FAULT_CONDITIONS)
    for value in values:
        kind, _, action = value.partition("=")
        if not kind or action not in SEVERITY:
            raise ValueError(f"{value!r}: expected TYPE=ACTION with ACTION one of {', '.join(SEVERITY)}")
        out[kind] = action
    return {k: a for k, a in out.items() if a != "none"}


def _autoscaler_config(args: argparse.Namespace) -> Any:
    import os

    from supernode.operator.scaler import AutoscalerConfig

    if not args.autoscale:
        return None
    namespace = args.router_namespace or os.environ.get("POD_NAMESPACE") or "supernode-system"
    return AutoscalerConfig(router_namespace=namespace, router_service=args.router_service,
                            router_ops_port=args.router_ops_port, interval_seconds=args.autoscale_interval,
                            prometheus_url=args.autoscale_prometheus_url,
                            prometheus_selector=args.autoscale_prometheus_selector)


def _drain_config(args: argparse.Namespace) -> Any:
    import os

    from supernode.operator.drain_watch import DrainWatchConfig

    if args.drain_poll < 0:
        raise ValueError(f"--drain-poll must be >= 0 seconds, got {args.drain_poll}")
    if not args.drain_poll:
        return None
    namespace = args.router_namespace or os.environ.get("POD_NAMESPACE") or "supernode-system"
    return DrainWatchConfig(router_namespace=namespace, router_service=args.router_service,
                            router_ops_port=args.router_ops_port, interval_seconds=args.drain_poll)


def _election_config(args: argparse.Namespace) -> Any:
    import os

    from supernode.operator.leader import ElectionConfig, default_identity

    return ElectionConfig(name=args.lease_name,
                          namespace=args.lease_namespace or os.environ.get("POD_NAMESPACE") or "default",
                          identity=args.identity or default_identity(), lease_duration=args.lease_duration,
                          renew_deadline=args.renew_deadline, retry_period=args.retry_period)


def _run_elected(args: argparse.Namespace, registry: Any, election: Any, metrics: Any) -> int:
    import asyncio
    import logging
    import os

    import kopf

    from supernode.operator.elected import EXIT_LOST, run_elected
    from supernode.operator.kube import KubeClient, load_access
    from supernode.operator.leader import LeaderElector

    async def operate(stop: asyncio.Event) -> None:
        # standalone: the Lease, not kopf's peering, keeps the other replicas idle.
        await kopf.operator(registry=registry, clusterwide=not args.namespace, namespaces=args.namespace,
                            standalone=True, stop_flag=stop)

    async def main() -> int:
        metrics.set_leader(False)
        if args.metrics_port is not None:
            metrics.serve(args.metrics_port, args.metrics_addr)
        client = KubeClient(load_access(args.server, context=args.context))
        code = await run_elected(LeaderElector(client, election, on_change=metrics.set_leader), operate,
                                 liveness=args.liveness)
        if code == EXIT_LOST:  # leadership lost: exit now, not after a graceful asyncio teardown
            logging.shutdown()
            os._exit(code)
        metrics.stop()
        return code

    return asyncio.run(main())


def preview_rollout(args: argparse.Namespace) -> int:
    """The same output as `supernode plan FILE --rollout` (one renderer behind both)."""
    from supernode.cli.plan import PlanInputError, load_deployments, render_rollouts

    try:
        deployments = load_deployments(args.file)
    except PlanInputError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    print(render_rollouts(deployments, "table", args.ready_seconds))
    return 0
