"""Runs the units (replica groups + router) as processes, driven by the pure state machine.

One loop, on the main thread: poll processes and health, feed events to `machine.step`, carry out
the actions, publish readiness into the endpoint file and the state file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from supernode.api import constants as C
from supernode.api.endpoints import EndpointFile
from supernode.cli.local import machine as M
from supernode.cli.local import procs
from supernode.cli.local.layout import GroupLayout
from supernode.cli.local.scaling import LocalScaler
from supernode.cli.local.secrets import group_env
from supernode.cli.local.statefile import GroupRecord, LocalState, RankRecord, save_endpoints, save_state

Printer = Callable[[str], None]
ROUTER_SETTLE_SECONDS = 10.0  # at start, how long to wait for the router to route to every group


@dataclass(frozen=True, slots=True)
class RouterLaunch:
    argv: tuple[str, ...]
    env: Mapping[str, str]
    url: str
    policy: M.Policy
    log_name: str = "router.log"
    unit: str = "router"


class StartFailed(Exception):
    """A unit could not start (its reason and log tail are in the message)."""


class Supervisor:
    def __init__(self, groups: Sequence[GroupLayout], router: RouterLaunch, state_dir: Path, *,
                 out: Printer = print, kill_grace_seconds: float = 3.0, probe_timeout: float = 1.0,
                 liveness_interval: float = 5.0, engine_token: str | None = None, parked: Sequence[str] = ()):
        self.groups = {g.unit: g for g in groups}
        self.engine_token = engine_token  # SUPERNODE_ENGINE_TOKEN for every rank (secrets.py)
        # Autoscaling (supernode.cli.local.scaling): groups planned but not started, groups draining.
        self.parked: set[str] = set(parked)
        self._draining: dict[str, float] = {}
        self.scaler: LocalScaler | None = None
        self.router = router
        self.state_dir = state_dir
        self.out = out
        self.kill_grace = kill_grace_seconds
        self.units = {name: M.UnitState(name) for name in [*self.groups, router.unit]}
        self.children: dict[str, list[procs.Child]] = {name: [] for name in self.units}
        self.ready: dict[str, bool] = dict.fromkeys(self.units, False)
        self.failures: dict[str, str] = {}  # units that gave up -> reason
        self._detail: dict[str, str] = {}  # last health detail printed per unit (progress output)
        self.liveness_interval = liveness_interval  # seconds between probes of a ready unit; 0 = none
        self._next_liveness: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._client = httpx.Client(timeout=probe_timeout, trust_env=False)
        self._ports = procs.free_ports(avoid=frozenset(g.port for g in groups))

    # --- helpers ---------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        self.out(f"[{time.monotonic() - self._t0:6.1f}s] {msg}")

    def _policy(self, unit: str) -> M.Policy:
        return self.router.policy if unit == self.router.unit else self.groups[unit].policy

    def _health_url(self, unit: str) -> str:
        return f"{self.router.url if unit == self.router.unit else self.groups[unit].url}/health"

    def _feed(self, unit: str, event: M.Event) -> None:
        before = self.units[unit]
        state, actions = M.step(before, event, self._policy(unit))
        self.units[unit] = state
        for action in actions:
            self._act(action)
        after = self.units[unit]
        if after.phase is not before.phase:
            why = f" ({after.reason})" if after.reason and after.reason != after.phase.value.lower() else ""
            self._say(f"{unit}: {after.phase.value}{why}")
            self._publish()

    def _act(self, action: M.Action) -> None:
        if isinstance(action, M.Spawn):
            self._spawn(action.unit)
        elif isinstance(action, M.Kill):
            procs.stop_all(self.children[action.unit], self.kill_grace)
            self._feed(action.unit, M.AllStopped(time.monotonic()))
        elif isinstance(action, M.SetReady):
            self.ready[action.unit] = action.ready
            self._write_endpoints()
        elif isinstance(action, M.GiveUp):
            logs = [c.log for c in self.children[action.unit]]
            tails = "\n".join(f"--- {log.name} (last lines)\n{procs.tail(log)}" for log in dict.fromkeys(logs))
            self.failures[action.unit] = f"{action.reason}\n{tails}".rstrip()
            self._say(f"{action.unit}: gave up: {action.reason}")

    def _spawn(self, unit: str) -> None:
        logs = self.state_dir / "logs"
        if unit == self.router.unit:
            r = self.router
            self.children[unit] = [procs.spawn("router", r.argv, r.env, logs / r.log_name)]
        else:
            g = self.groups[unit]
            # A restarted world gets a fresh rendezvous port: the dead leader's may linger in TIME_WAIT.
            rdzv = str(next(self._ports)) if self.units[unit].restarts else str(g.rendezvous_port)
            secret_env = group_env(self.engine_token)  # one store secret per group start
            self.children[unit] = [
                procs.spawn(f"rank {r.rank}", r.argv,
                            {**os.environ, **r.env, **secret_env, C.ENV_LEADER_PORT: rdzv}, logs / r.log_name)
                for r in g.ranks]
        self._detail.pop(unit, None)
        pids = ", ".join(c.what for c in self.children[unit])
        self._say(f"{unit}: started {pids}")

    def _probe(self, unit: str) -> None:
        try:
            resp = self._client.get(self._health_url(unit))
        except httpx.HTTPError as exc:
            detail = "not listening yet" if isinstance(exc, httpx.ConnectError) else type(exc).__name__
        else:
            if resp.status_code == 200:
                self._feed(unit, M.Healthy(time.monotonic()))
                return
            detail = f"health {resp.status_code}: {resp.text.strip()[:160]}"
        if self.units[unit].phase is M.Phase.READY:
            self._feed(unit, M.Unhealthy(time.monotonic(), detail))
            return
        if self._detail.get(unit) != detail:
            self._detail[unit] = detail
            self._say(f"{unit}: waiting: {detail}")

    def _write_endpoints(self) -> None:
        endpoints = [g.endpoint(ready=self.ready[name], draining=name in self._draining)
                     for name, g in self.groups.items() if name not in self.parked]
        save_endpoints(self.state_dir, EndpointFile(endpoints=endpoints))

    def _publish(self) -> None:
        rstate = self.units[self.router.unit]
        rkids = self.children[self.router.unit]
        save_state(self.state_dir, LocalState(
            up_pid=os.getpid(), router_url=self.router.url,
            router_pid=rkids[0].pid if rkids and rkids[0].poll() is None else None,
            router_phase=rstate.phase.value, router_restarts=rstate.restarts,
            groups=[
                GroupRecord(
                    deployment=g.owner, group=g.index, model=g.model, url=g.url,
                    phase=self._phase(name), restarts=self.units[name].restarts,
                    reason=self.units[name].reason,
                    ranks=[RankRecord(rank=r.rank, pid=c.pid if c.poll() is None else None)
                           for r, c in zip(g.ranks, self.children[name], strict=False)],
                )
                for name, g in self.groups.items()
            ],
            autoscaling=self.scaler.status() if self.scaler else {},
        ))

    def _phase(self, unit: str) -> str:
        if unit in self.parked:
            return "Parked"
        return "Draining" if unit in self._draining else self.units[unit].phase.value

    # --- autoscaling (the Units protocol of supernode.cli.local.scaling) ----------------------------
    def _of(self, deployment: str) -> list[str]:
        return sorted((u for u, g in self.groups.items() if g.deployment == deployment),
                      key=lambda u: self.groups[u].index)

    def active(self, deployment: str) -> list[str]:
        return [u for u in self._of(deployment) if u not in self.parked and u not in self._draining]

    def parked_units(self, deployment: str) -> list[str]:
        return [u for u in self._of(deployment) if u in self.parked]

    def is_ready(self, unit: str) -> bool:
        return self.units[unit].phase is M.Phase.READY

    def draining(self) -> Mapping[str, float]:
        return dict(self._draining)

    def activate(self, unit: str) -> None:
        self.parked.discard(unit)
        self.units[unit] = M.UnitState(unit)  # Pending: the next tick spawns it
        self._write_endpoints()
        self._publish()

    def drain(self, unit: str) -> None:
        self._draining[unit] = time.monotonic()
        self._write_endpoints()  # the router stops sending it new requests
        self._publish()

    def finish_drain(self, unit: str) -> None:
        self._draining.pop(unit, None)
        self.units[unit], _ = M.step(self.units[unit], M.StopRequested(time.monotonic()), self._policy(unit))
        self.ready[unit] = False
        procs.stop_all(self.children[unit], self.kill_grace)
        self.children[unit] = []
        self.units[unit] = M.UnitState(unit)
        self.parked.add(unit)
        self._write_endpoints()
        self._publish()

    def busy(self, unit: str) -> float | None:
        """Requests running or waiting on the group's engine (None when it does not answer)."""
        from supernode.router.stats import parse_prometheus

        try:
            auth = {"authorization": f"Bearer {self.engine_token}"} if self.engine_token else None
            resp = self._client.get(f"{self.groups[unit].url}/metrics", headers=auth)  # engines want the token
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        samples = parse_prometheus(resp.text)
        return samples.get("vllm:num_requests_running", 0.0) + samples.get("vllm:num_requests_waiting", 0.0)

    # --- the loop --------------------------------------------------------------------------------
    def tick(self) -> None:
        for unit, state in list(self.units.items()):
            if unit in self.parked:
                continue
            if state.phase in (M.Phase.STARTING, M.Phase.READY):
                for child in self.children[unit]:
                    code = child.poll()
                    if code is not None:
                        self._feed(unit, M.Exited(time.monotonic(), child.what, code))
                        break
            now = time.monotonic()
            if self.units[unit].phase is M.Phase.STARTING:
                self._probe(unit)
            elif (self.units[unit].phase is M.Phase.READY and self.liveness_interval > 0
                  and now >= self._next_liveness.get(unit, 0.0)):
                self._next_liveness[unit] = now + self.liveness_interval
                self._probe(unit)
            self._feed(unit, M.Tick(time.monotonic()))

    def all_ready(self) -> bool:
        return all(s.phase is M.Phase.READY for u, s in self.units.items() if u not in self.parked)

    def start(self, stop: threading.Event, timeout: float, interval: float = 0.25) -> None:
        """Bring every unit up; raise StartFailed with the reason if one cannot start."""
        self._write_endpoints()
        deadline = time.monotonic() + timeout
        while not self.all_ready():
            if stop.is_set():
                raise StartFailed("interrupted while starting")
            self.tick()
            if self.failures:
                raise StartFailed("\n".join(f"{u}: {why}" for u, why in self.failures.items()))
            if time.monotonic() > deadline:
                raise StartFailed(f"not ready after {timeout:g}s: " + ", ".join(
                    f"{u} {s.phase.value}" for u, s in self.units.items() if s.phase is not M.Phase.READY))
            time.sleep(interval)
        self._publish()
        # The router may have ejected an engine it probed before it listened: "Serving" once it routes to
        # every started group again (bounded; its health scrape re-admits within a scrape interval).
        settle = time.monotonic() + ROUTER_SETTLE_SECONDS
        while not self._router_routes_all() and time.monotonic() < settle and not stop.is_set():
            time.sleep(interval)

    def _router_routes_all(self) -> bool:
        want = sum(1 for u in self.groups if u not in self.parked)
        try:
            resp = self._client.get(f"{self.router.url}/ready")
            return int(resp.json().get("routable", 0)) >= want
        except (httpx.HTTPError, ValueError, AttributeError, TypeError):
            return False

    def supervise(self, stop: threading.Event, interval: float = 0.25) -> None:
        while not stop.wait(interval):
            self.tick()
            if self.scaler is not None:
                self.scaler.step(self)

    def shutdown(self, drain_seconds: float) -> None:
        """Drain: the router stops accepting and finishes in-flight requests (up to
        `drain_seconds`) while engines still run; then stop the engines. Nothing survives.
        The machine decides (Stopping, unpublish, kill); the grace per unit is decided here."""
        self._say(f"stopping: draining the router (up to {drain_seconds:g}s), then the engines")
        order = [self.router.unit, *self.groups]  # router first: in-flight requests need the engines
        for unit in order:
            self.units[unit], _ = M.step(self.units[unit], M.StopRequested(time.monotonic()), self._policy(unit))
            if unit == self.router.unit:
                procs.stop_all(self.children[unit], drain_seconds)
        self.ready = dict.fromkeys(self.ready, False)
        self._write_endpoints()
        procs.stop_all([c for u in self.groups for c in self.children[u]], self.kill_grace)
        for unit in order:
            self.units[unit], _ = M.step(self.units[unit], M.AllStopped(time.monotonic()), self._policy(unit))
        self._publish()
        self._client.close()
        if self.scaler is not None:
            self.scaler.close()
        self._say("stopped")
