"""`supernode crds`: write (or `--check`) the CRD YAML generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "crds", help="generate the CRD YAML from the API models",
        description="Write crds/modeldeployment.yaml from supernode.api.models.",
    )
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="file to write (default: crds/modeldeployment.yaml in the source tree; '-' = stdout)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file differs from what the models generate")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from supernode.api import crdgen

    text = crdgen.render_yaml()
    if args.output is not None and str(args.output) == "-":
        sys.stdout.write(text)
        return 0
    path: Path = args.output or crdgen.default_path()
    if args.check:
        current = path.read_text() if path.exists() else None
        if current != text:
            print(f"supernode: {path} is stale; regenerate it with `python -m supernode.cli crds`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0
