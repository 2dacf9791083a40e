"""Supernode: serve trillion-parameter MoE LLMs on Ascend SuperNodes and GPU pools.

The `supernode` console script: one entry point, one module per subcommand.

Each subcommand lives in `supernode.cli.<name>` and exposes `register(subparsers)`; those modules
import only argparse at import time and load their component (torch for `engine`) when run, so
`supernode plan` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module registers its own parser and imports its component only when run.
SUBCOMMANDS: tuple[str, ...] = ("plan", "crds", "operator", "router", "router_fleet", "engine", "up", "status")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supernode", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"supernode.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
