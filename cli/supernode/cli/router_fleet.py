"""`supernode router-fleet --config FILE --replicas N`: N router processes behind one round-robin port.

What `supernode up --router-replicas N` runs, so HA can be tried on one machine: each replica is a
plain `supernode router` on its own loopback port (named replica-0..N-1 in the shared heartbeats);
a dead replica is restarted; the front skips it meanwhile. The config must use shared state
(`state.type: redis` and a postgres ledger) — several replicas on local state would each grant every
limit again, so this is refused. Writes the replicas' pids and ports to ``--state-file`` (tests
kill one with it).
"""

from __future__ import annotations

import argparse

from supernode.cli.router import add_common_args, load_or_report


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("router-fleet", help="several router replicas behind one local port")
    add_common_args(p, config_help="router config (YAML or JSON) with shared state")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state-file", help="write {replicas: [{name, pid, port}]} here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from supernode.cli.local.fleet import Fleet, check_shared

    config = load_or_report(args, "router-fleet")
    if config is None:
        return 2
    problem = check_shared(config, args.replicas)
    if problem:
        print(f"supernode router-fleet: {problem}", file=sys.stderr)
        return 2
    return Fleet(args).run()
