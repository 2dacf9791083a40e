"""One gang-restart back-off rule (supernode.api.recovery.restart_delay), used by the operator and by
`supernode up`: the same spec restarts a failed group at the same moments in both."""

from __future__ import annotations

import pytest
from builders import make_md

from supernode.api.models import RecoverySpec
from supernode.api.recovery import restart_delay
from supernode.cli.local import machine as M
from supernode.cli.local.layout import policy_for
from supernode.operator import lifecycle
from supernode.operator.observe import GroupState, PodState


@pytest.mark.parametrize(("restarts", "want"), [(0, 10.0), (1, 20.0), (2, 25.0), (10, 25.0), (10_000, 25.0)])
def test_the_first_restart_waits_backoff_seconds_then_doubles_to_the_cap(restarts: int, want: float) -> None:
    assert restart_delay(restarts, 10, 25) == want


def test_both_callers_call_the_one_function(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, float, float]] = []

    def spy(restarts: int, backoff: float, cap: float) -> float:
        calls.append((restarts, backoff, cap))
        return 42.0

    monkeypatch.setattr(lifecycle, "restart_delay", spy)
    monkeypatch.setattr(M, "restart_delay", spy)
    assert lifecycle.backoff(RecoverySpec(backoff_seconds=3, max_backoff_seconds=7), 2) == 42.0
    assert M.Policy(backoff_seconds=3, max_backoff_seconds=7).backoff(2) == 42.0
    assert calls == [(2, 3, 7), (2, 3, 7)]


def _failed_group(restarts: int, seen: float) -> GroupState:
    pods = (PodState("p0", 0, "r", 0, True, "", "n"), PodState("p1", 0, "r", 1, False, "CrashLoopBackOff", "n"))
    return GroupState(0, "g0", "r", "StatefulSet", 2, pods, False, None, restarts, None, seen, None, (), {})


@pytest.mark.parametrize("restarts", [0, 1, 2, 3])
def test_operator_and_local_runtime_restart_at_the_same_moment(restarts: int) -> None:
    md = make_md("x").recovery(max_group_restarts=10, backoff_seconds=2, max_backoff_seconds=10).obj()
    failed_at, delay = 100.0, restart_delay(restarts, 2, 10)

    # Operator: the failure is seen at `failed_at`; the restart is due `delay` later.
    assert lifecycle.decide(_failed_group(restarts, failed_at), md.spec.recovery, failed_at + delay - 0.5).action \
        == "wait"
    assert lifecycle.decide(_failed_group(restarts, failed_at), md.spec.recovery, failed_at + delay).action \
        == "restart"

    # `supernode up`: a rank of a ready group exits at `failed_at`; the group is spawned again `delay` later.
    policy = policy_for(md, start_timeout_seconds=60)
    state = M.UnitState("x/0", phase=M.Phase.READY, restarts=restarts, ever_ready=True, ready_since=0.0)
    state, _ = M.step(state, M.Exited(failed_at, "rank 1", 1), policy)
    state, _ = M.step(state, M.AllStopped(failed_at), policy)
    state, early = M.step(state, M.Tick(failed_at + delay - 0.5), policy)
    state, due = M.step(state, M.Tick(failed_at + delay), policy)
    assert early == [] and due == [M.Spawn("x/0")]
