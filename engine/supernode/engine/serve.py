"""`supernode engine serve`: one engine rank. Rank 0 serves HTTP and drives the steps; others follow.

Rank 0 starts HTTP at once (``/health`` answers 503) and loads in a background thread: join the
group, load weights, size the KV cache, start the engine loop; then ``/health`` turns 200. A load
failure or an engine-loop failure (e.g. a dead rank) makes the process exit non-zero.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from supernode.api.constants import ENV_ENGINE_TOKEN
from supernode.api.models import Mode
from supernode.engine.chat import ReasoningBudgets
from supernode.engine.config import EngineConfig
from supernode.engine.distributed import DistEnv

if TYPE_CHECKING:
    from supernode.engine.runner import ModelRunner
    from supernode.engine.server.app import ServerState

log = logging.getLogger("supernode.engine.serve")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """One rank's serve settings: the EngineConfig plus what only the HTTP side and the launcher need."""

    engine: EngineConfig
    served_model_name: str = ""  # default: the model directory's name
    aliases: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    nproc_per_node: int = 1
    local_rank: int = 0
    default_mode: Mode = Mode.THINK_HIGH
    budgets: ReasoningBudgets = field(default_factory=ReasoningBudgets)
    shutdown_timeout_s: float = 30.0  # on SIGTERM, in-flight requests get this long to finish

    @property
    def model_name(self) -> str:
        return self.served_model_name or Path(self.engine.model_dir).resolve().name

    def follower_argv(self) -> list[str]:
        """CLI args that start a local follower of this rank (``--local-rank`` appended per follower)."""
        argv = [*self.engine.as_flags(), "--nproc-per-node", str(self.nproc_per_node)]
        return argv + (["--served-model-name", self.served_model_name] if self.served_model_name else [])


def serve(opts: ServeOptions) -> int:
    from supernode.engine import logs

    env = DistEnv.from_env(nproc_per_node=opts.nproc_per_node, local_rank=opts.local_rank)
    if not (Path(opts.engine.model_dir) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"model_dir: no tokenizer.json in {opts.engine.model_dir!r}")
    logs.configure(rank=env.rank, model=opts.model_name)
    children = _spawn_local_followers(opts) if opts.local_rank == 0 and opts.nproc_per_node > 1 else []
    try:
        return _leader(opts, env) if env.rank == 0 else _follower(opts, env)
    finally:
        deadline = time.monotonic() + 15  # released followers exit at once; one shared grace period, not 15 s each
        for child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _spawn_local_followers(opts: ServeOptions) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "supernode.cli", "engine", "serve", *opts.follower_argv()]
    log.info("starting %d local follower ranks", opts.nproc_per_node - 1)
    return [subprocess.Popen([*cmd, "--local-rank", str(i)]) for i in range(1, opts.nproc_per_node)]


def _follower(opts: ServeOptions, env: DistEnv) -> int:
    from supernode.engine.runner import ModelRunner

    log.info("follower rank %d/%d: loading", env.rank, env.world_size)
    runner = ModelRunner(opts.engine, env)
    log.info("follower rank %d: ready, following the leader", env.rank)
    runner.follower_loop()
    log.info("follower rank %d: leader shut the group down", env.rank)
    return 0


def _leader(opts: ServeOptions, env: DistEnv) -> int:
    import uvicorn

    from supernode.engine.metrics import EngineMetrics
    from supernode.engine.server.app import ServerState, build_app
    from supernode.engine.server.guard import Guards
    from supernode.httpserver import HttpLimits, uvicorn_options

    state = ServerState(opts.model_name, EngineMetrics(opts.model_name), opts.aliases, opts.default_mode, opts.budgets)
    state.guards = Guards.from_env()  # SUPERNODE_ENGINE_TOKEN: only the router may call (docs/security.md)
    if state.guards.token is None:
        log.warning("no %s set: any client that reaches %s:%d may call this engine", ENV_ENGINE_TOKEN,
                    opts.host, opts.port)
    exit_code = [0]
    runner_box: list[ModelRunner] = []
    server: uvicorn.Server | None = None

    def fail(message: str) -> None:
        log.error(message)
        exit_code[0] = 1
        if server is not None:
            server.should_exit = True

    def load() -> None:
        try:
            _load(opts, env, state, runner_box, fail)
        except BaseException as exc:
            log.exception("loading failed")
            fail(f"loading failed: {exc}")

    @contextlib.asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        # The loader and the engine loop live exactly as long as the HTTP server (stopped even on SIGTERM).
        threading.Thread(target=load, name="engine-loader", daemon=True).start()
        log.info("HTTP on http://%s:%d (health is 503 until loaded)", opts.host, opts.port)
        try:
            yield
        finally:
            if state.engine is not None:
                state.engine.stop()
            state.encoder.close()
            for runner in runner_box:
                try:
                    runner.shutdown()  # releases the followers
                except Exception:
                    log.exception("runner shutdown failed")
            log.info("engine stopped")

    config = uvicorn.Config(
        build_app(state, lifespan),
        host=opts.host,
        port=opts.port,
        log_config=None,
        timeout_graceful_shutdown=max(1, round(opts.shutdown_timeout_s)),
        **uvicorn_options(HttpLimits()),  # header deadline/size, idle keep-alive, connection cap (shared)
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        exit_code[0] = exit_code[0] or 1
    return exit_code[0]


def _load(
    opts: ServeOptions,
    env: DistEnv,
    state: ServerState,
    runner_box: list[ModelRunner],
    fail: Callable[[str], None],
) -> None:
    from supernode.engine.llm_engine import EngineOptions, LLMEngine
    from supernode.engine.runner import ModelRunner
    from supernode.engine.tokenizer import Tokenizer

    started = time.monotonic()
    tokenizer = Tokenizer.from_dir(opts.engine.model_dir)
    log.info("tokenizer loaded: %d tokens", tokenizer.vocab_size)
    if env.world_size > 1:
        log.info("waiting for %d ranks at %s:%d", env.world_size, env.leader_addr, env.leader_port)
    log.info("loading weights from %s", opts.engine.model_dir)
    runner = ModelRunner(opts.engine, env)
    runner_box.append(runner)
    max_len = min(runner.max_model_len, runner.num_kv_blocks * runner.block_size)
    options = EngineOptions.from_config(opts.engine, opts.model_name, max_len)
    engine = LLMEngine(runner, tokenizer, options, state.metrics)
    engine.on_fatal = lambda exc: fail(f"engine loop failed: {exc}")
    cfg = opts.engine
    if cfg.kv_events_endpoint:  # vLLM-format KV events (ZMQ) for vLLM-aware routers
        from supernode.engine.kv_publisher import ZmqKVPublisher

        engine.kv_sinks.append(ZmqKVPublisher(
            cfg.kv_events_endpoint, cfg.kv_events_replay_endpoint, topic=cfg.kv_events_topic,
            block_size=runner.block_size, buffer_steps=cfg.kv_events_buffer_steps))
        log.info("KV events published on %s (replay: %s)", cfg.kv_events_endpoint, cfg.kv_events_replay_endpoint)
    engine.start()
    state.engine = engine
    log.info(
        "ready in %.1fs: %d ranks, %d KV blocks x %d tokens, context %d",
        time.monotonic() - started,
        env.world_size,
        runner.num_kv_blocks,
        runner.block_size,
        max_len,
    )
