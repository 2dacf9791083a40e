"""`supernode` console script: one entry point, one module per subcommand.

Each subcommand lives in `supernode.cli.<name>` and exposes `register(subparsers)`; those modules
import only argparse at import time and load their component (torch for `engine`) when run, so
`supernode plan` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("plan", "plan replica groups for a ModelDeployment on an inventory"),
    ("crds", "generate the CRD YAML from the API models"),
    ("operator", "run the Kubernetes operator"),
    ("router", "run the OpenAI/Anthropic gateway"),
    ("engine", "run or prepare the built-in inference engine"),
    ("up", "run the whole stack on this machine"),
    ("status", "show the running local stack"),
)


def _fail(message: str) -> int:
    print(f"supernode: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supernode", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in SUBCOMMANDS:
        module_name = f"supernode.cli.{name.replace('-', '_')}"
        if importlib.util.find_spec(module_name) is None:
            p = sub.add_parser(name, help=f"{help_} (not implemented yet)")
            p.set_defaults(func=lambda _args, n=name: _fail(f"not implemented: supernode {n}"))
            continue
        importlib.import_module(module_name).register(sub)
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
