"""`supernode engine serve [MODEL_DIR] ...`: run one engine rank (rank 0 serves HTTP).

The model directory may be given as vLLM users type it (``serve MODEL_DIR`` or ``--model DIR``) or as
``--model-dir DIR``. The engine flags are generated from `EngineConfig`'s fields (one source for
names, defaults and help). Flags win over the pod env the operator sets (SUPERNODE_MODEL_DIR,
_MODEL_NAME, _HTTP_PORT, _DEVICE, _TENSOR_PARALLEL, _EXPERT_PARALLEL).

Distributed placement comes from SUPERNODE_RANK / SUPERNODE_WORLD_SIZE / SUPERNODE_LEADER_ADDR /
SUPERNODE_LEADER_PORT (node ranks); ``--nproc-per-node`` starts that many ranks on this node (default on
cuda/npu: SUPERNODE_DEVICES_PER_POD, one rank per device, as the operator and `supernode up` plan pods).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supernode.engine.serve import ServeOptions


def register(subparsers: Any) -> None:
    import os

    from supernode.api import constants as C
    from supernode.engine.config import flag_fields, flag_name

    env = os.environ.get
    p = subparsers.add_parser("serve", help="run one engine rank (rank 0 serves the OpenAI-compatible HTTP API)")
    p.add_argument("model", nargs="?", metavar="MODEL_DIR", help="checkpoint directory (same as --model-dir)")
    p.add_argument(
        "--model-dir",
        "--model",
        dest="model_dir",
        default=env(C.ENV_MODEL_DIR),
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
    for f in flag_fields():
        meta, var = f.metadata, f.metadata["env"]
        given = env(var) if var else None
        shown = "" if f.default is None else f"; default {f.default}"
        help_ = meta["help"] + (f" (env {var})" if var else "") + shown
        p.add_argument(
            flag_name(f),
            *meta["aliases"],
            dest=f.name,
            type=meta["parse"],
            choices=meta["choices"],
            default=given if given is not None else None,  # None: EngineConfig's default
            help=help_,
        )
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help=f"ranks started on this node (default: env {C.ENV_DEVICES_PER_POD} on cuda/npu, else 1)",
    )
    p.add_argument("--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--default-mode", choices=C.MODES, default=C.MODE_THINK_HIGH)
    p.add_argument("--think-high-budget", type=int, default=1024, help="max reasoning tokens in think-high")
    p.add_argument("--think-max-budget", type=int, default=4096, help="max reasoning tokens in think-max")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM")
    p.set_defaults(func=run)


def model_dir(args: argparse.Namespace) -> str:
    """The one model directory: positional MODEL_DIR, ``--model``/``--model-dir``, else the pod env."""
    import os

    from supernode.api import constants as C

    positional, flag, pod = args.model, args.model_dir, os.environ.get(C.ENV_MODEL_DIR)
    if positional and flag and positional != flag and flag != pod:  # the pod env is only a fallback
        raise ValueError(f"model_dir: given twice ({positional!r} and --model {flag!r}); give it once")
    chosen = positional or flag
    if not chosen:
        raise ValueError(f"model_dir: required (MODEL_DIR, --model or env {C.ENV_MODEL_DIR})")
    return str(chosen)


def _nproc_per_node(args: argparse.Namespace) -> int:
    """One rank per device of the pod: the planner counts devices per pod, the engine counts ranks."""
    import os

    from supernode.api import constants as C

    if args.nproc_per_node is not None:
        return int(args.nproc_per_node)
    raw = os.environ.get(C.ENV_DEVICES_PER_POD, "")
    if (args.device or "cpu") == "cpu" or not raw:
        return 1
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"{C.ENV_DEVICES_PER_POD}={raw!r} must be an integer") from None


def options(args: argparse.Namespace) -> ServeOptions:
    """Parsed flags → ServeOptions (raises ConfigError / ValueError naming the field)."""
    from supernode.api.models import Mode
    from supernode.engine.chat import ReasoningBudgets
    from supernode.engine.config import EngineConfig
    from supernode.engine.serve import ServeOptions

    if args.think_high_budget < 1 or args.think_max_budget < 1:
        raise ValueError("reasoning budgets must be positive")
    values = {**vars(args), "model_dir": model_dir(args)}
    return ServeOptions(
        engine=EngineConfig.from_values(values),
        served_model_name=args.served_model_name,
        aliases=tuple(args.alias),
        host=args.host,
        port=args.port,
        nproc_per_node=_nproc_per_node(args),
        local_rank=args.local_rank,
        default_mode=Mode(args.default_mode),
        budgets=ReasoningBudgets(args.think_high_budget, args.think_max_budget),
        shutdown_timeout_s=args.shutdown_timeout,
    )


def run(args: argparse.Namespace) -> int:
    from supernode.engine.serve import serve

    try:
        return serve(options(args))
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        print(f"supernode: engine serve: {exc}", file=sys.stderr)
        return 2
