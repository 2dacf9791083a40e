"""`supernode router --config FILE`: run the OpenAI/Anthropic gateway."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("router", help="run the OpenAI/Anthropic gateway")
    add_common_args(p, config_help="router config (YAML or JSON)")
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.set_defaults(func=run)


def add_common_args(p: argparse.ArgumentParser, *, config_help: str) -> None:
    """The flags `supernode router` and `supernode router-fleet` share."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds in-flight requests may take to finish after SIGTERM/Ctrl-C (default 30)")


def load_or_report(args: argparse.Namespace, command: str) -> Any:
    """The router config named by --config, or None after printing why it is invalid."""
    import sys

    from pydantic import ValidationError

    from supernode.router.config import load_config

    try:
        return load_config(args.config)
    except (OSError, ValueError, ValidationError) as e:
        print(f"supernode {command}: invalid config {args.config}: {e}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from supernode.router.app import create_app

    config = load_or_report(args, "router")
    if config is None:
        return 2
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    # Health and /metrics scrapes would log a line each per endpoint every interval.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    srv = config.server
    ops = f", ops (/metrics, /health) on http://{srv.metrics_host or srv.host}:{srv.metrics_port}" \
        if srv.metrics_port is not None else ""
    print(f"supernode router: listening on http://{srv.host}:{srv.port}{ops} "
          f"(discovery {config.discovery.type}{' ' + config.discovery.path if config.discovery.path else ''})",
          file=sys.stderr, flush=True)
    try:
        app = create_app(config)
    except (OSError, ValueError) as e:  # e.g. a configured tenants file that is missing
        print(f"supernode router: cannot start: {e}", file=sys.stderr)
        return 2
    import uvicorn

    loop_factory = uvicorn.Config(app).get_loop_factory()  # uvloop when installed, as uvicorn.run would
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(app, config, args))
    return 0


async def _serve(app: Any, config: Any, args: argparse.Namespace) -> None:
    """The API server (with the shared HTTP limits) and, when configured, the ops server, in one loop;
    the API server owns the lifespan and signals, the ops server stops with it."""
    import contextlib

    import uvicorn

    from supernode.httpserver import HttpLimits, limits_of, uvicorn_options

    srv = config.server
    grace = max(1, round(args.shutdown_timeout))
    api = uvicorn.Server(uvicorn.Config(app, host=srv.host, port=srv.port, log_level=args.log_level,
                                        access_log=False, timeout_graceful_shutdown=grace,
                                        **uvicorn_options(limits_of(srv))))
    if srv.metrics_port is None:
        await api.serve()
        return
    ops = uvicorn.Server(uvicorn.Config(app.state.ops_app, host=srv.metrics_host or srv.host, port=srv.metrics_port,
                                        log_level="warning", access_log=False, lifespan="off",
                                        **uvicorn_options(HttpLimits(max_connections=64, overflow_connections=64))))
    ops.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # API server owns signals
    ops_task = asyncio.create_task(ops.serve())
    try:
        await api.serve()
    finally:
        ops.should_exit = True
        await ops_task
