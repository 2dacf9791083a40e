"""`supernode engine ...`: dispatcher; each sub-subcommand lives in `supernode.cli.engine_<name>`.

Each of those modules exposes `register(subparsers)` and imports only argparse at import time (torch
is loaded inside the handler).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Any

# (sub-subcommand, module under supernode.cli, help)
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("serve", "engine_serve", "run one engine rank (rank 0 serves the OpenAI-compatible HTTP API)"),
    ("init-checkpoint", "engine_init", "write a random-initialised DeepSeek-V3-family checkpoint with a tokenizer"),
)


def _missing(name: str) -> Any:
    def fail(_args: argparse.Namespace) -> int:
        print(f"supernode: not implemented: supernode engine {name}", file=sys.stderr)
        return 2

    return fail


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("engine", help="run or prepare the built-in inference engine")
    sub = parser.add_subparsers(dest="engine_command", metavar="ENGINE_COMMAND")
    parser.set_defaults(func=lambda _a: (parser.print_help(), 2)[1])
    for name, module, help_ in SUBCOMMANDS:
        module_name = f"supernode.cli.{module}"
        if importlib.util.find_spec(module_name) is None:
            p = sub.add_parser(name, help=f"{help_} (not implemented yet)")
            p.set_defaults(func=_missing(name))
            continue
        importlib.import_module(module_name).register(sub)
