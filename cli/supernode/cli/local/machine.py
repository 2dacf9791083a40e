"""Supervision decisions as a pure state machine: (state, event) -> (state, actions).

A *unit* is what is started and stopped as a whole: one replica group (all its ranks: a TP world
cannot run with a rank missing, so any rank dying takes the group down) or the router. The
process side (`supervisor.py`) turns process exits, health probes and the clock into events and
carries out the actions; nothing here touches a process, a socket or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from supernode.api.recovery import restart_delay


class Phase(StrEnum):
    PENDING = "Pending"  # not started yet
    STARTING = "Starting"  # processes spawned, waiting for health
    READY = "Ready"  # healthy; routed to
    BACKOFF = "Restarting"  # taken down after a failure, waiting out the back-off
    FAILED = "Failed"  # gave up: restart budget spent, or it never came up the first time
    STOPPING = "Stopping"  # shutdown requested
    STOPPED = "Stopped"


@dataclass(frozen=True, slots=True)
class Policy:
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    max_restarts: int = 5
    start_timeout_seconds: float = 300.0
    # Ready this long without a failure and the restart budget is whole again: the budget bounds a
    # crash loop, not the number of unrelated failures over weeks.
    budget_reset_seconds: float = 600.0
    # Consecutive failed liveness probes of a ready unit before it counts as failed (a hung leader
    # whose process is still alive); generous so a busy CPU does not cause restarts.
    unhealthy_after: int = 6
    # A unit that has never been ready fails at once: `supernode up` reports why and exits non-zero
    # instead of retrying a bad spec, a busy port or a missing device forever.
    fail_fast_before_ready: bool = True

    def backoff(self, restarts: int) -> float:
        """Back-off before restart number `restarts + 1`: the operator's rule (supernode.api.recovery)."""
        return restart_delay(restarts, self.backoff_seconds, self.max_backoff_seconds)


@dataclass(frozen=True, slots=True)
class UnitState:
    name: str
    phase: Phase = Phase.PENDING
    restarts: int = 0  # restarts consumed from the budget
    ever_ready: bool = False
    started_at: float = 0.0
    ready_since: float = 0.0
    failed_probes: int = 0
    next_start_at: float = 0.0
    reason: str = ""  # why it is not ready, in words


# --- events ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class Healthy:
    now: float


@dataclass(frozen=True, slots=True)
class Unhealthy:
    """A liveness probe failed (no answer, or not 200)."""

    now: float
    detail: str


@dataclass(frozen=True, slots=True)
class Exited:
    """One process of the unit exited (or was killed)."""

    now: float
    what: str  # e.g. "rank 1 (pid 4242)"
    code: int | None


@dataclass(frozen=True, slots=True)
class StopRequested:
    now: float


@dataclass(frozen=True, slots=True)
class AllStopped:
    """Every process of the unit is gone (after a Kill)."""

    now: float


Event = Tick | Healthy | Unhealthy | Exited | StopRequested | AllStopped


# --- actions --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Spawn:
    unit: str


@dataclass(frozen=True, slots=True)
class Kill:
    """Stop every process of the unit (TERM, then KILL after a grace period)."""

    unit: str
    reason: str


@dataclass(frozen=True, slots=True)
class SetReady:
    """Publish readiness (the router routes only to ready endpoints)."""

    unit: str
    ready: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    unit: str
    reason: str


Action = Spawn | Kill | SetReady | GiveUp


def _describe_exit(event: Exited) -> str:
    code = "killed" if event.code is None else (
        f"killed by signal {-event.code}" if event.code < 0 else f"exit code {event.code}"
    )
    return f"{event.what} exited ({code})"


def _fail(state: UnitState, now: float, reason: str, policy: Policy) -> tuple[UnitState, list[Action]]:
    """The unit failed: take it all down, then back off and restart, or give up."""
    actions: list[Action] = [SetReady(state.name, False), Kill(state.name, reason)]
    if (policy.fail_fast_before_ready and not state.ever_ready) or state.restarts >= policy.max_restarts:
        why = reason if not state.ever_ready else f"{reason}; restart budget ({policy.max_restarts}) spent"
        return replace(state, phase=Phase.FAILED, reason=why), [*actions, GiveUp(state.name, why)]
    wait = policy.backoff(state.restarts)
    return (
        replace(state, phase=Phase.BACKOFF, restarts=state.restarts + 1, next_start_at=now + wait,
                reason=f"{reason}; restarting in {wait:g}s"),
        actions,
    )


def step(state: UnitState, event: Event, policy: Policy) -> tuple[UnitState, list[Action]]:
    """Advance one unit by one event. Events that do not apply in a phase are ignored."""
    phase = state.phase
    if isinstance(event, StopRequested):
        if phase in (Phase.STOPPING, Phase.STOPPED):
            return state, []
        return replace(state, phase=Phase.STOPPING, reason="stopping"), [
            SetReady(state.name, False), Kill(state.name, "shutdown")]
    if isinstance(event, AllStopped):
        if phase is Phase.STOPPING:
            return replace(state, phase=Phase.STOPPED, reason="stopped"), []
        if phase is Phase.BACKOFF:  # the back-off runs from when the old processes are gone
            wait = policy.backoff(state.restarts - 1)
            return replace(state, next_start_at=max(state.next_start_at, event.now + wait)), []
        return state, []
    if isinstance(event, Exited):
        if phase in (Phase.STARTING, Phase.READY):
            return _fail(state, event.now, _describe_exit(event), policy)
        return state, []  # exits while backing off / stopping are the Kill taking effect
    if isinstance(event, Unhealthy):
        if phase is not Phase.READY:
            return state, []
        failed = state.failed_probes + 1
        if failed >= policy.unhealthy_after:
            return _fail(replace(state, failed_probes=0), event.now,
                         f"not healthy for {failed} probes in a row ({event.detail})", policy)
        return replace(state, failed_probes=failed), []
    if isinstance(event, Healthy):
        if phase is Phase.READY and state.failed_probes:
            return replace(state, failed_probes=0), []
        if phase is Phase.STARTING:
            return (replace(state, phase=Phase.READY, ever_ready=True, ready_since=event.now, failed_probes=0,
                            reason=""),
                    [SetReady(state.name, True)])
        return state, []
    # Tick
    now = event.now
    if phase is Phase.PENDING or (phase is Phase.BACKOFF and now >= state.next_start_at):
        return replace(state, phase=Phase.STARTING, started_at=now, reason="starting"), [Spawn(state.name)]
    if phase is Phase.STARTING and now - state.started_at > policy.start_timeout_seconds:
        return _fail(state, now, f"not healthy after {policy.start_timeout_seconds:g}s", policy)
    if phase is Phase.READY and state.restarts and now - state.ready_since >= policy.budget_reset_seconds:
        return replace(state, restarts=0), []
    return state, []
