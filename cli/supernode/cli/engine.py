"""`supernode engine ...`: dispatcher; each sub-subcommand lives in `supernode.cli.engine_<name>`.

Each of those modules exposes `register(subparsers)` and imports only argparse at import time (torch
is loaded inside the handler).
"""

from __future__ import annotations

from typing import Any

from supernode.cli import engine_init, engine_serve


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("engine", help="run or prepare the built-in inference engine")
    sub = parser.add_subparsers(dest="engine_command", metavar="ENGINE_COMMAND")
    parser.set_defaults(func=lambda _a: (parser.print_help(), 2)[1])
    for module in (engine_serve, engine_init):
        module.register(sub)
