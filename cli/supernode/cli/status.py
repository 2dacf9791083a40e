"""`supernode status`: what the local stack (started by `supernode up`) is running, probed live."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("status", help="show the running local stack")
    p.add_argument("--state-dir", default=".supernode", help="the state dir `supernode up` used")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from supernode.cli.local.status import show_status

    return show_status(args.state_dir, as_json=args.json)
