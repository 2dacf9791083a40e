"""`supernode engine init-checkpoint DIR --preset tiny|small|tiny-v4|small-v4`: a random checkpoint + tokenizer."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "init-checkpoint", help="write a random-initialised DeepSeek-V3 or V4 checkpoint with a tokenizer"
    )
    p.add_argument("dir", help="output directory (created)")
    p.add_argument(
        "--preset",
        choices=("tiny", "small", "tiny-v4", "small-v4"),
        default="tiny",
        help="architecture and size: tiny/small are DeepSeek-V3, tiny-v4/small-v4 DeepSeek-V4 (default: tiny)",
    )
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weight dtype")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from supernode.engine.checkpoint import init_checkpoint

    try:
        config = init_checkpoint(args.dir, preset=args.preset, seed=args.seed, dtype=args.dtype)
    except (OSError, ValueError) as e:
        print(f"supernode: init-checkpoint: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.preset} checkpoint to {args.dir}: {config['model_type']}, vocab {config['vocab_size']}, "
        f"hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
        f"{config['n_routed_experts']} routed experts, {args.dtype}"
    )
    return 0
