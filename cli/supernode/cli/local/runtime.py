"""`supernode up`: specs → local plan → checkpoints → processes under supervision → report."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.api.pools import pool_views
from supernode.cli.local import procs
from supernode.cli.local.checkpoints import CheckpointError, ensure_checkpoint
from supernode.cli.local.detach import fork_into_background
from supernode.cli.local.fleet import FLEET_STATE, fleet_ops_urls
from supernode.cli.local.inventory import local_inventory
from supernode.cli.local.layout import LOCALHOST, GroupLayout, layout_groups
from supernode.cli.local.machine import Policy
from supernode.cli.local.report import snippets, stack_table
from supernode.cli.local.routerconf import router_config, shared_env
from supernode.cli.local.scaling import LocalScaler
from supernode.cli.local.secrets import ensure_admin_key, private_dir, write_engine_token
from supernode.cli.local.specs import SpecError, load_deployments, preset_of
from supernode.cli.local.statefile import ROUTER_CONFIG, load_state, write_atomic
from supernode.cli.local.supervisor import RouterLaunch, StartFailed, Supervisor

EXIT_BAD_SPEC = 2
EXIT_CANNOT_START = 1


@dataclass(slots=True)
class UpOptions:
    files: Sequence[str]
    tenants: str | None = None
    port: int = 8080
    state_dir: str = ".supernode"
    start_timeout: float = 300.0
    drain_seconds: float = 10.0
    autoscale_interval: float = 2.0  # seconds between local autoscaling decisions
    python: str = sys.executable
    # Tests replace the command prefixes (`python -m supernode.cli engine serve` / `... router`).
    detach: bool = False
    engine_cmd: Sequence[str] | None = None
    router_cmd: Sequence[str] | None = None
    router_replicas: int = 1
    redis: str | None = None  # shared state URL, handed to the routers by env only (may carry a password)
    postgres: str | None = None  # shared ledger DSN, same
    stop: threading.Event = field(default_factory=threading.Event)


def _print_flush(line: str) -> None:
    print(line, flush=True)


class CannotStart(Exception):
    pass


def _autoscaled_layout(md: ModelDeployment, inventory: Any) -> tuple[ModelDeployment, int]:
    """An autoscaled deployment is laid out for as many groups as fit up to maxReplicas (the extra ones
    parked until the scaler starts them); (deployment to plan, groups it asks for now)."""
    from supernode.operator import planner

    auto = md.spec.autoscaling
    if auto is None or auto.mode.value != "Builtin" or auto.max_replicas <= md.spec.replicas:
        return md, md.spec.replicas
    most = md.model_copy(update={"spec": md.spec.model_copy(update={"replicas": auto.max_replicas})})
    fits = planner.plan(most, inventory).capacity.placeable
    wanted = max(md.spec.replicas, fits)
    return md.model_copy(update={"spec": md.spec.model_copy(update={"replicas": wanted})}), md.spec.replicas


def _plan_groups(deployments: list[ModelDeployment], opts: UpOptions, state_dir: Path,
                 out: Callable[[str], None]) -> tuple[list[GroupLayout], list[str]]:
    from supernode.operator import planner

    inventory = local_inventory()
    plans = []
    parked: list[str] = []
    for original in deployments:
        views = pool_views(original)
        if original.spec.pools and original.spec.autoscaling is not None:
            out(f"warning: {original.metadata.name}: supernode up runs each pool at its replicas; autoscaling "
                "a deployment with pools is the operator's (docs/autoscaling.md)")
        for view in views:
            # Autoscaled layout (parked groups) for a deployment without pools only.
            md, start = _autoscaled_layout(view.md, inventory) if not view.name else (view.md, view.md.spec.replicas)
            parked += [f"{md.metadata.name}/{i}" for i in range(start, md.spec.replicas)]
            plan = planner.plan(md, inventory)
            where = f"{md.metadata.name}/{view.name}" if view.name else md.metadata.name
            why = f"{where}: only {plan.capacity.placeable} of {plan.capacity.desired} groups fit on this " \
                  "machine: " + "; ".join(plan.capacity.reasons)
            if plan.capacity.limited and not view.name:
                raise CannotStart(why)
            if plan.capacity.limited:  # one pool short is not an error for the others (as CapacityLimited is)
                out(f"warning: {why}")
            inventory = planner.apply_plan(inventory, plan)
            plans.append((view, md, plan))
        if not any(g.placed for v, _, p in plans if v in views for g in p.groups):
            raise CannotStart(f"{original.metadata.name}: no group of any pool fits on this machine")
    # Every rank on this machine shares its cores: split them evenly (the engine alone only knows
    # its own group's ranks and would oversubscribe).
    ranks = sum(len(g.pods) for _, _, plan in plans for g in plan.groups if g.placed)
    cpu_threads = max(1, (os.cpu_count() or 1) // max(1, ranks))
    ports = procs.free_ports(avoid=frozenset({opts.port}))
    device_ids = itertools.count()
    groups: list[GroupLayout] = []
    for view, md, plan in plans:
        try:
            model_dir = ensure_checkpoint(state_dir, preset_of(md), python=opts.python, out=out)
        except CheckpointError as exc:
            raise CannotStart(f"{md.metadata.name}: {exc}") from exc
        device = md.spec.accelerator.type.device
        groups += layout_groups(md, plan, python=opts.python, model_dir=model_dir.resolve(), device=device,
                                ports=ports, start_timeout_seconds=opts.start_timeout, engine_cmd=opts.engine_cmd,
                                device_ids=device_ids, cpu_threads=cpu_threads if device == "cpu" else None,
                                pool=view.name, capacity_weight=view.capacity_weight)
    return groups, parked


def _router_launch(opts: UpOptions, config: Path, admin_key: str, engine_token: str) -> RouterLaunch:
    fleet = opts.router_replicas > 1
    command = "router-fleet" if fleet else "router"
    prefix = list(opts.router_cmd) if opts.router_cmd else [opts.python, "-m", "supernode.cli", command]
    argv: tuple[str, ...] = (*prefix, "--config", str(config), "--host", LOCALHOST, "--port", str(opts.port),
                             "--shutdown-timeout", f"{opts.drain_seconds:g}")
    if fleet:
        argv = (*argv, "--replicas", str(opts.router_replicas),
                "--state-file", str(config.parent / FLEET_STATE))
    policy = Policy(backoff_seconds=0.5, max_backoff_seconds=5, max_restarts=100,
                    start_timeout_seconds=min(120.0, opts.start_timeout))
    # Secrets live in the routers' environment only, never printed or written to the config.
    env = {**os.environ, C.ENV_ADMIN_KEY: admin_key, C.ENV_ENGINE_TOKEN: engine_token,
           **shared_env(opts.redis, opts.postgres)}
    return RouterLaunch(argv=argv, env=env, url=f"http://{LOCALHOST}:{opts.port}", policy=policy)


def prepare(opts: UpOptions, out: Callable[[str], None]) -> Supervisor:
    """Everything before processes start; raises SpecError or CannotStart with the reason."""
    if opts.router_replicas > 1 and not (opts.redis and opts.postgres):
        raise SpecError([f"--router-replicas {opts.router_replicas} needs --redis URL and --postgres DSN: replicas "
                         "on local state would each grant every tenant's limits and quota again"])
    deployments = load_deployments(opts.files)
    tenants = Path(opts.tenants) if opts.tenants else None
    if tenants is not None and not tenants.is_file():
        raise SpecError([f"{tenants}: tenants file not found"])
    state_dir = private_dir(Path(opts.state_dir).resolve())  # 0700: ledger, logs, configs, the admin key
    previous = load_state(state_dir)
    if previous is not None and previous.up_pid != os.getpid() and procs.pid_alive(previous.up_pid):
        raise CannotStart(f"a stack is already running from {state_dir} (pid {previous.up_pid}); "
                          "stop it or use another --state-dir")
    if not procs.port_free(opts.port):
        raise CannotStart(f"port {opts.port} on {LOCALHOST} is in use (choose another with --port)")
    groups, parked = _plan_groups(deployments, opts, state_dir, out)
    config = state_dir / ROUTER_CONFIG
    # Not a port a group (parked ones included) will bind later.
    taken = {opts.port, *(p for g in groups for p in (g.port, g.rendezvous_port))}
    metrics_port = next(procs.free_ports(avoid=frozenset(taken)))
    write_atomic(config, yaml.safe_dump(router_config(deployments, state_dir=state_dir, port=opts.port,
                                                      tenants=tenants, metrics_port=metrics_port,
                                                      redis=bool(opts.redis), postgres=bool(opts.postgres))))
    admin_key, _ = ensure_admin_key(state_dir, C.ENV_ADMIN_KEY)
    engine_token, _ = write_engine_token(state_dir)  # engines answer only the router (docs/security.md)
    launch = _router_launch(opts, config, admin_key, engine_token)
    sup = Supervisor(groups, launch, state_dir, out=out, engine_token=engine_token, parked=parked)
    # The router serves its autoscaling signals on the ops port, next to /metrics; a fleet's replicas
    # each have their own, listed in the fleet's state file.
    fleet_state = config.parent / FLEET_STATE
    one = [f"http://{LOCALHOST}:{metrics_port}"]
    urls = (lambda: fleet_ops_urls(fleet_state)) if opts.router_replicas > 1 else (lambda: one)
    scaler = LocalScaler(deployments, urls, interval=opts.autoscale_interval, say=sup._say)
    if scaler.scaled:
        sup.scaler = scaler
    else:
        scaler.close()
    return sup


def run_up(opts: UpOptions, out: Callable[[str], None] = print) -> int:
    if opts.detach:
        code = fork_into_background(Path(opts.state_dir), out, opts.start_timeout + 60)
        if code is not None:
            return code  # the parent; the child runs the stack below, printing into up.log
        out = _print_flush

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        out(f"received {signal.Signals(signum).name}")
        opts.stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    try:
        sup = prepare(opts, out)
    except SpecError as exc:
        for problem in exc.problems:
            out(f"error: {problem}")
        return EXIT_BAD_SPEC
    except CannotStart as exc:
        out(f"error: {exc}")
        return EXIT_CANNOT_START
    try:
        sup.start(opts.stop, opts.start_timeout)
    except StartFailed as exc:
        out(f"error: cannot start: {exc}")
        sup.shutdown(drain_seconds=1.0)
        return EXIT_CANNOT_START
    state = load_state(sup.state_dir)
    if state is not None:
        out("\n" + stack_table(state) + "\n")
    model = next(iter(sup.groups.values())).model if sup.groups else "MODEL"
    out(snippets(sup.router.url, model, with_key=bool(opts.tenants)))
    _, key_file = ensure_admin_key(sup.state_dir, C.ENV_ADMIN_KEY)
    admin = f"$(cat {key_file})" if key_file else f"${C.ENV_ADMIN_KEY}"
    out(f"Admin key: {key_file or C.ENV_ADMIN_KEY} (never printed)")
    out(f'Usage ledger: curl -s {sup.router.url}/admin/usage -H "Authorization: Bearer {admin}"')
    out(f"Logs: {sup.state_dir / 'logs'}    Status: supernode status --state-dir {opts.state_dir}")
    out("Serving. Ctrl-C stops everything.")
    sup.supervise(opts.stop)
    sup.shutdown(opts.drain_seconds)
    return 0
