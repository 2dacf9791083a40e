"""`supernode engine serve --model-dir DIR ...`: run one engine rank (rank 0 serves HTTP).

Flags win over the pod env the operator sets (SUPERNODE_MODEL_DIR, _MODEL_NAME, _HTTP_PORT, _DEVICE,
_TENSOR_PARALLEL, _EXPERT_PARALLEL).

Distributed placement comes from SUPERNODE_RANK / SUPERNODE_WORLD_SIZE / SUPERNODE_LEADER_ADDR /
SUPERNODE_LEADER_PORT (node ranks); ``--nproc-per-node`` starts that many ranks on this node (default on
cuda/npu: SUPERNODE_DEVICES_PER_POD, one rank per device, as the operator and `supernode up` plan pods).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

_FORWARDED = (
    "model_dir", "served_model_name", "host", "port", "device", "tensor_parallel", "expert_parallel",
    "nproc_per_node", "max_num_seqs", "max_num_batched_tokens", "num_kv_blocks", "block_size", "max_model_len",
    "max_waiting", "default_mode", "think_high_budget", "think_max_budget", "seed", "cpu_threads",
    "shutdown_timeout",
)  # fmt: skip


def register(subparsers: Any) -> None:
    import os

    from supernode.api import constants as C

    env = os.environ.get
    p = subparsers.add_parser("serve", help="run one engine rank (rank 0 serves the OpenAI-compatible HTTP API)")
    p.add_argument(
        "--model-dir",
        default=env(C.ENV_MODEL_DIR),
        required=not env(C.ENV_MODEL_DIR),
        help=f"checkpoint directory: config.json, safetensors, tokenizer.json (env {C.ENV_MODEL_DIR})",
    )
    p.add_argument(
        "--served-model-name",
        default=env(C.ENV_MODEL_NAME, ""),
        help=f"model name clients send (env {C.ENV_MODEL_NAME}; default: directory name)",
    )
    p.add_argument("--alias", action="append", default=[], help="another accepted model name (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (pods: 0.0.0.0)")
    p.add_argument("--port", type=int, default=env(C.ENV_HTTP_PORT, "8000"), help=f"env {C.ENV_HTTP_PORT}")
    p.add_argument(
        "--device", choices=("cpu", "cuda", "npu"), default=env(C.ENV_DEVICE, "cpu"), help=f"env {C.ENV_DEVICE}"
    )
    p.add_argument("--tensor-parallel", type=int, default=env(C.ENV_TENSOR_PARALLEL, "1"))
    p.add_argument("--expert-parallel", type=int, default=env(C.ENV_EXPERT_PARALLEL, "1"))
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help=f"ranks started on this node (default: env {C.ENV_DEVICES_PER_POD} on cuda/npu, else 1)",
    )
    p.add_argument("--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences per step")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048, help="tokens per step")
    p.add_argument("--num-kv-blocks", type=int, default=None, help="KV cache size in blocks (default: derived)")
    p.add_argument(
        "--block-size", type=int, default=C.DEFAULT_BLOCK_SIZE, help="tokens per KV block (must match the router)"
    )
    p.add_argument("--max-model-len", type=int, default=None, help="context limit (default: the model's)")
    p.add_argument("--max-waiting", type=int, default=256, help="queued requests beyond the batch; more get 429")
    p.add_argument("--default-mode", choices=C.MODES, default=C.MODE_THINK_HIGH)
    p.add_argument("--think-high-budget", type=int, default=1024, help="max reasoning tokens in think-high")
    p.add_argument("--think-max-budget", type=int, default=4096, help="max reasoning tokens in think-max")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM")
    p.add_argument("--cpu-threads", type=int, default=None, help="CPU threads per rank (default: cores / local ranks)")
    p.set_defaults(func=run)


def _argv(args: argparse.Namespace) -> tuple[str, ...]:
    out: list[str] = []
    for name in _FORWARDED:
        value = getattr(args, name)
        if value is not None and value != "":
            out += [f"--{name.replace('_', '-')}", str(value)]
    for alias in args.alias:
        out += ["--alias", alias]
    return tuple(out)


def _nproc_per_node(args: argparse.Namespace) -> int:
    """One rank per device of the pod: the planner counts devices per pod, the engine counts ranks."""
    import os

    from supernode.api import constants as C

    if args.nproc_per_node is not None:
        return int(args.nproc_per_node)
    raw = os.environ.get(C.ENV_DEVICES_PER_POD, "")
    if args.device == "cpu" or not raw:
        return 1
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"{C.ENV_DEVICES_PER_POD}={raw!r} must be an integer") from None


def run(args: argparse.Namespace) -> int:
    from supernode.api.models import Mode
    from supernode.engine.chat import ReasoningBudgets
    from supernode.engine.config import ConfigError
    from supernode.engine.serve import ServeOptions, serve

    if args.think_high_budget < 1 or args.think_max_budget < 1:
        print("supernode: engine serve: reasoning budgets must be positive", file=sys.stderr)
        return 2
    try:
        args.nproc_per_node = _nproc_per_node(args)
    except ValueError as exc:
        print(f"supernode: engine serve: {exc}", file=sys.stderr)
        return 2
    opts = ServeOptions(
        model_dir=args.model_dir,
        served_model_name=args.served_model_name,
        aliases=tuple(args.alias),
        host=args.host,
        port=args.port,
        device=args.device,
        tensor_parallel=args.tensor_parallel,
        expert_parallel=args.expert_parallel,
        nproc_per_node=args.nproc_per_node,
        local_rank=args.local_rank,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        num_kv_blocks=args.num_kv_blocks,
        block_size=args.block_size,
        max_model_len=args.max_model_len,
        max_waiting=args.max_waiting,
        default_mode=Mode(args.default_mode),
        budgets=ReasoningBudgets(args.think_high_budget, args.think_max_budget),
        seed=args.seed,
        cpu_threads=args.cpu_threads,
        shutdown_timeout_s=args.shutdown_timeout,
        follower_argv=_argv(args),
    )
    try:
        return serve(opts)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"supernode: engine serve: {exc}", file=sys.stderr)
        return 2
