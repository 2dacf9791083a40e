"""The supervision state machine: pure (state, event) -> (state, actions) table tests."""

from __future__ import annotations

from dataclasses import replace

import pytest

from supernode.cli.local.machine import (
    AllStopped,
    Event,
    Exited,
    GiveUp,
    Healthy,
    Kill,
    Phase,
    Policy,
    SetReady,
    Spawn,
    StopRequested,
    Tick,
    Unhealthy,
    UnitState,
    step,
)

POLICY = Policy(backoff_seconds=1, max_backoff_seconds=8, max_restarts=3, start_timeout_seconds=60)


def unit(phase: Phase = Phase.PENDING, **kw: object) -> UnitState:
    return replace(UnitState("flash/0"), phase=phase, **kw)  # type: ignore[arg-type]


def run(state: UnitState, *events: Event, policy: Policy = POLICY) -> tuple[UnitState, list[object]]:
    actions: list[object] = []
    for event in events:
        state, out = step(state, event, policy)
        actions.extend(out)
    return state, actions


def test_a_pending_unit_is_spawned_on_the_first_tick() -> None:
    state, actions = run(unit(), Tick(0))
    assert state.phase is Phase.STARTING and actions == [Spawn("flash/0")]


def test_a_starting_unit_becomes_ready_and_published_when_healthy() -> None:
    state, actions = run(unit(), Tick(0), Healthy(3))
    assert state.phase is Phase.READY and state.ever_ready
    assert actions[-1] == SetReady("flash/0", True)


def test_a_rank_dying_takes_the_whole_group_down_and_schedules_a_restart_with_backoff() -> None:
    state, actions = run(unit(Phase.READY, ever_ready=True), Exited(10, "rank 1 (pid 7)", -9))
    assert actions[:2] == [SetReady("flash/0", False), Kill("flash/0", "rank 1 (pid 7) exited (killed by signal 9)")]
    assert state.phase is Phase.BACKOFF and state.restarts == 1 and state.next_start_at == 11
    assert run(state, Tick(10.5))[1] == []
    state, actions = run(state, Tick(11))
    assert state.phase is Phase.STARTING and actions == [Spawn("flash/0")]


@pytest.mark.parametrize(("restarts", "wait"), [(0, 1), (1, 2), (2, 4), (3, 8), (6, 8)])
def test_backoff_doubles_and_is_capped(restarts: int, wait: float) -> None:
    assert POLICY.backoff(restarts) == wait


def test_the_restart_budget_once_spent_gives_up() -> None:
    state = unit(Phase.READY, ever_ready=True, restarts=3)
    state, actions = run(state, Exited(5, "rank 0", 1))
    assert state.phase is Phase.FAILED
    assert isinstance(actions[-1], GiveUp) and "restart budget (3) spent" in actions[-1].reason


def test_a_unit_that_never_became_ready_fails_fast_with_the_reason() -> None:
    state, actions = run(unit(), Tick(0), Exited(1, "rank 0 (pid 9)", 2))
    assert state.phase is Phase.FAILED
    assert actions[-1] == GiveUp("flash/0", "rank 0 (pid 9) exited (exit code 2)")


def test_without_fail_fast_a_first_start_failure_is_retried() -> None:
    policy = replace(POLICY, fail_fast_before_ready=False)
    state, _ = run(unit(), Tick(0), Exited(1, "router", 1), policy=policy)
    assert state.phase is Phase.BACKOFF


def test_a_start_that_never_becomes_healthy_times_out() -> None:
    state, actions = run(unit(Phase.READY, ever_ready=True), Exited(0, "rank 0", -9), Tick(1), Tick(62))
    assert state.phase is Phase.BACKOFF and state.restarts == 2
    assert Kill("flash/0", "not healthy after 60s") in actions


def test_exits_while_backing_off_are_the_kill_taking_effect_and_are_ignored() -> None:
    state, _ = run(unit(Phase.READY, ever_ready=True), Exited(0, "rank 1", -9))
    assert run(state, Exited(0.1, "rank 0", -15)) == (state, [])


def test_stop_unpublishes_and_kills_then_reports_stopped() -> None:
    state, actions = run(unit(Phase.READY, ever_ready=True), StopRequested(1))
    assert actions == [SetReady("flash/0", False), Kill("flash/0", "shutdown")]
    assert state.phase is Phase.STOPPING
    assert run(state, Exited(2, "rank 0", -15), Tick(3))[1] == []  # no restart while stopping
    assert run(state, AllStopped(2))[0].phase is Phase.STOPPED


def test_a_late_health_report_after_a_failure_does_not_resurrect_the_unit() -> None:
    state, _ = run(unit(Phase.READY, ever_ready=True), Exited(0, "rank 1", -9))
    assert run(state, Healthy(0.2)) == (state, [])


def test_the_restart_budget_is_whole_again_after_a_long_ready_spell() -> None:
    policy = replace(POLICY, budget_reset_seconds=100)
    state, _ = run(unit(Phase.READY, ever_ready=True, restarts=2), Exited(0, "rank 0", -9), Tick(5), Healthy(10),
                   policy=policy)
    assert state.phase is Phase.READY and state.restarts == 3
    assert run(state, Tick(109), policy=policy)[0].restarts == 3
    assert run(state, Tick(110), policy=policy)[0].restarts == 0


def test_a_ready_unit_that_stops_answering_is_failed_after_enough_probes_in_a_row() -> None:
    policy = replace(POLICY, unhealthy_after=3)
    state = unit(Phase.READY, ever_ready=True)
    state, actions = run(state, Unhealthy(1, "timeout"), Unhealthy(2, "timeout"), policy=policy)
    assert state.phase is Phase.READY and state.failed_probes == 2 and actions == []
    recovered, _ = run(state, Healthy(3), policy=policy)
    assert recovered.failed_probes == 0 and recovered.phase is Phase.READY
    state, actions = run(state, Unhealthy(3, "timeout"), policy=policy)
    assert state.phase is Phase.BACKOFF
    assert Kill("flash/0", "not healthy for 3 probes in a row (timeout)") in actions


def test_the_backoff_counts_from_when_the_old_processes_are_gone() -> None:
    state, _ = run(unit(Phase.READY, ever_ready=True), Exited(10, "rank 0", -9))
    assert state.next_start_at == 11
    state, _ = run(state, AllStopped(13))  # the kill took 3 s
    assert state.next_start_at == 14
    assert run(state, Tick(13.5))[0].phase is Phase.BACKOFF
