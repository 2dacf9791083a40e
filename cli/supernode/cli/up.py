"""`supernode up FILE [FILE...]`: run the ModelDeployments, the router and supervision locally."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("up", help="run the whole stack on this machine",
                              description="Plan ModelDeployments on this machine, start their engine ranks "
                                          "and the router, supervise them until Ctrl-C.")
    p.add_argument("files", nargs="+", metavar="FILE", help="ModelDeployment YAML files")
    p.add_argument("--tenants", metavar="FILE", help="tenants file (API keys, tiers, quotas); none = no auth")
    p.add_argument("--port", type=int, default=8080, help="router port on 127.0.0.1 (default 8080)")
    p.add_argument("--state-dir", default=".supernode", help="checkpoints, logs, ledger, state (default .supernode)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds for everything to become healthy")
    p.add_argument("--drain-seconds", type=float, default=10.0, help="on Ctrl-C, wait this long for in-flight requests")
    p.add_argument("--detach", action="store_true",
                   help="run in the background; return once serving (stop it with kill -INT PID)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from supernode.cli.local.runtime import UpOptions, run_up

    return run_up(UpOptions(files=args.files, tenants=args.tenants, port=args.port, state_dir=args.state_dir,
                            start_timeout=args.start_timeout, drain_seconds=args.drain_seconds,
                            detach=args.detach),
                  out=lambda line: print(line, flush=True))
