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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from supernode.api.constants import DEFAULT_BLOCK_SIZE, ENV_ENGINE_TOKEN
from supernode.api.models import Mode
from supernode.engine.chat import ReasoningBudgets
from supernode.engine.distributed import DistEnv

log = logging.getLogger("supernode.engine.serve")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    model_dir: str
    served_model_name: str = ""  # default: the model directory's name
    aliases: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"
    tensor_parallel: int = 1
    expert_parallel: int = 1
    nproc_per_node: int = 1
    local_rank: int = 0
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    num_kv_blocks: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    max_model_len: int | None = None
    max_waiting: int = 256
    default_mode: Mode = Mode.THINK_HIGH
    budgets: ReasoningBudgets = field(default_factory=ReasoningBudgets)
    seed: int = 0
    shutdown_timeout_s: float = 30.0  # on SIGTERM, in-flight requests get this long to finish
    cpu_threads: int | None = None  # intra-op CPU threads per rank (1 avoids OpenMP spin under CPU contention)
    follower_argv: tuple[str, ...] = ()  # CLI args that start a local follower (``--local-rank`` appended)

    @property
    def model_name(self) -> str:
        from pathlib import Path

        return self.served_model_name or Path(self.model_dir).resolve().name


def serve(opts: ServeOptions) -> int:
    from pathlib import Path

    from supernode.engine import logs

    env = DistEnv.from_env(nproc_per_node=opts.nproc_per_node, local_rank=opts.local_rank)
    _engine_config(opts)  # validate before starting anything (raises ConfigError naming the field)
    if not (Path(opts.model_dir) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"model_dir: no tokenizer.json in {opts.model_dir!r}")
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


def _engine_config(opts: ServeOptions) -> object:
    from supernode.engine.config import EngineConfig

    return EngineConfig(
        model_dir=opts.model_dir,
        device=opts.device,
        tensor_parallel=opts.tensor_parallel,
        expert_parallel=opts.expert_parallel,
        block_size=opts.block_size,
        num_kv_blocks=opts.num_kv_blocks,
        max_num_seqs=opts.max_num_seqs,
        max_num_batched_tokens=opts.max_num_batched_tokens,
        max_model_len=opts.max_model_len,
        seed=opts.seed,
        cpu_threads=opts.cpu_threads,
    )


def _spawn_local_followers(opts: ServeOptions) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "supernode.cli", "engine", "serve", *opts.follower_argv]
    log.info("starting %d local follower ranks", opts.nproc_per_node - 1)
    return [subprocess.Popen([*cmd, "--local-rank", str(i)]) for i in range(1, opts.nproc_per_node)]


def _follower(opts: ServeOptions, env: DistEnv) -> int:
    from supernode.engine.runner import ModelRunner

    log.info("follower rank %d/%d: loading", env.rank, env.world_size)
    runner = ModelRunner(_engine_config(opts), env)  # type: ignore[arg-type]
    log.info("follower rank %d: ready, following the leader", env.rank)
    runner.follower_loop()
    log.info("follower rank %d: leader shut the group down", env.rank)
    return 0


def _leader(opts: ServeOptions, env: DistEnv) -> int:
    import uvicorn

    from supernode.api.httpserver import HttpLimits, uvicorn_options
    from supernode.engine.metrics import EngineMetrics
    from supernode.engine.server.app import ServerState, build_app
    from supernode.engine.server.guard import Guards

    state = ServerState(opts.model_name, EngineMetrics(opts.model_name), opts.aliases, opts.default_mode, opts.budgets)
    state.guards = Guards.from_env()  # SUPERNODE_ENGINE_TOKEN: only the router may call (docs/security.md)
    if state.guards.token is None:
        log.warning("no %s set: any client that reaches %s:%d may call this engine", ENV_ENGINE_TOKEN,
                    opts.host, opts.port)
    exit_code = [0]
    runner_box: list[object] = []
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
                    runner.shutdown()  # type: ignore[attr-defined]  # releases the followers
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


def _load(opts: ServeOptions, env: DistEnv, state: object, runner_box: list[object], fail: object) -> None:
    from supernode.engine.llm_engine import EngineOptions, LLMEngine
    from supernode.engine.runner import ModelRunner
    from supernode.engine.tokenizer import Tokenizer

    started = time.monotonic()
    tokenizer = Tokenizer.from_dir(opts.model_dir)
    log.info("tokenizer loaded: %d tokens", tokenizer.vocab_size)
    if env.world_size > 1:
        log.info("waiting for %d ranks at %s:%d", env.world_size, env.leader_addr, env.leader_port)
    log.info("loading weights from %s", opts.model_dir)
    runner = ModelRunner(_engine_config(opts), env)  # type: ignore[arg-type]
    runner_box.append(runner)
    max_len = min(runner.max_model_len, runner.num_kv_blocks * runner.block_size)
    options = EngineOptions(
        opts.model_name,
        max_num_seqs=opts.max_num_seqs,
        max_num_batched_tokens=opts.max_num_batched_tokens,
        max_model_len=max_len,
        max_waiting=opts.max_waiting,
        seed=opts.seed,
    )
    engine = LLMEngine(runner, tokenizer, options, state.metrics)  # type: ignore[attr-defined]
    engine.on_fatal = lambda exc: fail(f"engine loop failed: {exc}")  # type: ignore[operator]
    engine.start()
    state.engine = engine  # type: ignore[attr-defined]
    log.info(
        "ready in %.1fs: %d ranks, %d KV blocks x %d tokens, context %d",
        time.monotonic() - started,
        env.world_size,
        runner.num_kv_blocks,
        runner.block_size,
        max_len,
    )
