"""`supernode router --config FILE`: run the OpenAI/Anthropic gateway."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("router", help="run the OpenAI/Anthropic gateway")
    p.add_argument("--config", required=True, help="router config (YAML or JSON)")
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds in-flight requests may take to finish after SIGTERM/Ctrl-C (default 30)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    import uvicorn
    from pydantic import ValidationError

    from supernode.router.app import create_app
    from supernode.router.config import load_config

    try:
        config = load_config(args.config)
    except (OSError, ValueError, ValidationError) as e:
        print(f"supernode router: invalid config {args.config}: {e}", file=sys.stderr)
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
    print(f"supernode router: listening on http://{config.server.host}:{config.server.port} "
          f"(discovery {config.discovery.type}{' ' + config.discovery.path if config.discovery.path else ''})",
          file=sys.stderr, flush=True)
    uvicorn.run(create_app(config), host=config.server.host, port=config.server.port,
                log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=max(1, round(args.shutdown_timeout)))
    return 0
