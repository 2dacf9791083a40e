"""What to run for each planned replica group on this machine: pure data, no processes.

Each rank gets the env the planner gives its pod (rank, world size, parallel sizes, group), with
the leader on 127.0.0.1, free local ports and the local checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.api.models import VISIBLE_DEVICES_ENV, EngineType, ModelDeployment
from supernode.cli.local.machine import Policy
from supernode.operator.types import Plan

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class RankLaunch:
    rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    log_name: str


@dataclass(frozen=True, slots=True)
class GroupLayout:
    deployment: str
    index: int
    model: str
    aliases: tuple[str, ...]
    modes: tuple[str, ...]
    port: int  # leader HTTP port
    rendezvous_port: int
    max_concurrency: int
    policy: Policy
    ranks: tuple[RankLaunch, ...] = field(default_factory=tuple)
    pool: str = ""  # its pool of spec.pools ("" without pools)
    capacity_weight: float = 1.0

    @property
    def owner(self) -> str:
        """`deployment`, or `deployment/pool` in a deployment with spec.pools."""
        return f"{self.deployment}/{self.pool}" if self.pool else self.deployment

    @property
    def unit(self) -> str:
        return f"{self.owner}/{self.index}"

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def endpoint(self, *, ready: bool, draining: bool = False) -> Endpoint:
        return Endpoint(
            url=self.url, model=self.model, aliases=list(self.aliases), modes=list(self.modes),  # type: ignore[arg-type]
            deployment=self.deployment, group=self.index, engine_type=EngineType.BUILTIN,
            ready=ready, draining=draining, max_concurrency=self.max_concurrency, pool=self.pool,
            capacity_weight=self.capacity_weight,
        )


def policy_for(md: ModelDeployment, start_timeout_seconds: float, unhealthy_after: int = 6) -> Policy:
    rec = md.spec.recovery
    return Policy(backoff_seconds=rec.backoff_seconds, max_backoff_seconds=rec.max_backoff_seconds,
                  max_restarts=rec.max_group_restarts, start_timeout_seconds=start_timeout_seconds,
                  unhealthy_after=unhealthy_after)


def rank_env(md: ModelDeployment, *, device: str, model_dir: Path, http_port: int, rendezvous_port: int,
             plan_env: Mapping[str, str]) -> dict[str, str]:
    """The planner's pod env (rank, world size, parallel sizes, group, ...) with this machine's addresses,
    ports and paths in place of the cluster's."""
    env = dict(plan_env)
    env.update({
        C.ENV_LEADER_ADDR: LOCALHOST,
        C.ENV_LEADER_PORT: str(rendezvous_port),
        C.ENV_MODEL_DIR: str(model_dir),
        C.ENV_DEVICE: device,
        C.ENV_HTTP_PORT: str(http_port),
        C.ENV_GLOO_SOCKET_IFNAME: "lo",
    })
    if device == "cpu":
        # Several ranks share few cores: one intra-op thread each avoids oversubscription stalls.
        env.setdefault("OMP_NUM_THREADS", "1")
    env.update(md.spec.engine.env)
    return env


def engine_argv(python: str, md: ModelDeployment, *, model_dir: Path, port: int, device: str,
                cpu_threads: int | None = None) -> tuple[str, ...]:
    return (
        python, "-m", "supernode.cli", "engine", "serve",
        "--model-dir", str(model_dir), "--served-model-name", md.spec.model.name,
        "--host", LOCALHOST, "--port", str(port), "--device", device,
        "--tensor-parallel", str(md.spec.parallelism.tensor),
        "--expert-parallel", str(md.spec.parallelism.expert),
        *(arg for alias in md.spec.model.aliases for arg in ("--alias", alias)),
        *(("--cpu-threads", str(cpu_threads)) if cpu_threads else ()),
        *md.spec.engine.args,
    )


def layout_groups(md: ModelDeployment, plan: Plan, *, python: str, model_dir: Path, device: str,
                  ports: Iterator[int], start_timeout_seconds: float = 300.0,
                  engine_cmd: Sequence[str] | None = None, device_ids: Iterator[int] | None = None,
                  cpu_threads: int | None = None, unhealthy_after: int = 6, pool: str = "",
                  capacity_weight: float = 1.0) -> list[GroupLayout]:
    """One GroupLayout per placed group of the plan. `engine_cmd` replaces the engine command
    prefix (everything before the engine's own flags) — used by tests to run stand-ins.
    `device_ids` hands out this machine's accelerator indices: all pods share one machine here, so
    each rank gets its own devices instead of the per-node 0..N-1 the planner writes. `pool` and
    `capacity_weight`: the pool view `md` stands for (supernode.api.pools)."""
    out = []
    prefix = f"{md.metadata.name}-{pool}" if pool else md.metadata.name
    for group in plan.groups:
        if not group.placed:
            continue
        port, rdzv = next(ports), next(ports)
        argv = engine_argv(python, md, model_dir=model_dir, port=port, device=device, cpu_threads=cpu_threads)
        if engine_cmd is not None:
            argv = (*engine_cmd, *argv[5:])
        ranks = []
        for pod in group.pods:
            env = rank_env(md, device=device, model_dir=model_dir, http_port=port, rendezvous_port=rdzv,
                           plan_env=pod.env)
            visible = VISIBLE_DEVICES_ENV.get(device)
            if visible and device_ids is not None:
                env[visible] = ",".join(str(next(device_ids)) for _ in range(max(1, pod.devices)))
            ranks.append(RankLaunch(rank=pod.rank, argv=argv, env=env,
                                    log_name=f"{prefix}-g{group.index}-r{pod.rank}.log"))
        out.append(GroupLayout(
            deployment=md.metadata.name, index=group.index, model=md.spec.model.name,
            aliases=tuple(md.spec.model.aliases), modes=tuple(m.value for m in md.spec.modes),
            port=port, rendezvous_port=rdzv, max_concurrency=md.spec.engine.max_concurrency,
            policy=policy_for(md, start_timeout_seconds, unhealthy_after), ranks=tuple(ranks), pool=pool,
            capacity_weight=capacity_weight,
        ))
    return out
