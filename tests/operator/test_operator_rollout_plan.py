"""Rollout planner: table tests named like the behaviour they pin down."""

from __future__ import annotations

import pytest

from supernode.operator.rollout import Observed, Step, Target, next_step


def g(index: int, rev: str = "new", ready: bool = True, draining: bool = False, started: float | None = None,
      name: str | None = None) -> Observed:
    return Observed(index, name or f"g{index}-{rev}", rev, ready, draining, started)


CASES: dict[str, tuple[list[Observed], Target, Step]] = {
    "creates every missing group on first apply": (
        [], Target(3, "new"), Step(create=(0, 1, 2))),
    "does nothing when every group is current and ready": (
        [g(0), g(1)], Target(2, "new"), Step()),
    "surges one new group then waits for it": (
        [g(0, "old"), g(1, "old")], Target(2, "new", max_surge=1),
        Step(create=(0,), waiting=("slot 1: maxSurge/maxUnavailable allow no more progress",))),
    "drains the old group once its successor is ready": (
        [g(0, "old"), g(0, "new"), g(1, "old")], Target(2, "new", max_surge=1),
        Step(drain=("g0-old",), waiting=("slot 1: maxSurge/maxUnavailable allow no more progress",))),
    "waits for the surge group to become ready before draining": (
        [g(0, "old"), g(0, "new", ready=False), g(1, "old")], Target(2, "new", max_surge=1),
        Step(waiting=("slot 0: waiting for g0-new to become ready",
                      "slot 1: maxSurge/maxUnavailable allow no more progress"))),
    "never exceeds maxSurge while a drained group is still there": (
        [g(0, "old", draining=True, started=100.0), g(0, "new"), g(1, "old")],
        Target(2, "new", max_surge=1, drain_timeout=60, now=110.0),
        Step(waiting=("g0-old: draining, 50s left", "slot 1: maxSurge/maxUnavailable allow no more progress"))),
    "waits for drain timeout then deletes": (
        [g(0, "old", draining=True, started=100.0), g(0, "new"), g(1, "old")],
        Target(2, "new", max_surge=1, drain_timeout=60, now=160.0),
        Step(create=(1,), delete=("g0-old",))),
    "deletes a draining group at once when it serves nothing": (
        [g(0, "old", ready=False, draining=True, started=100.0)], Target(1, "new", drain_timeout=600, now=101.0),
        Step(create=(0,), delete=("g0-old",))),
    "never exceeds maxUnavailable without surge": (
        [g(0, "old"), g(1, "old"), g(2, "old")], Target(3, "new", max_surge=0, max_unavailable=1),
        Step(drain=("g0-old",), waiting=("slot 1: maxSurge/maxUnavailable allow no more progress",
                                         "slot 2: maxSurge/maxUnavailable allow no more progress"))),
    "replaces a broken old group without spending availability": (
        [g(0, "old", ready=False), g(1, "old")], Target(2, "new", max_surge=0, max_unavailable=1),
        Step(drain=("g0-old",), waiting=("slot 1: maxSurge/maxUnavailable allow no more progress",))),
    "treats maxSurge=0 and maxUnavailable=0 as a surge of one": (
        [g(0, "old")], Target(1, "new", max_surge=0, max_unavailable=0), Step(create=(0,))),
    "scales down by draining the highest groups first": (
        [g(0), g(1), g(2), g(3)], Target(2, "new"), Step(drain=("g3-new", "g2-new"))),
    "replaces a group drained at the current revision only once it is deleted (same name)": (
        [g(0), g(1, draining=True, started=100.0)], Target(2, "new", drain_timeout=600, now=110.0),
        Step(waiting=("g1-new: draining, 590s left", "slot 1: g1-new drains first (its replacement takes its name)"))),
    "scales up into free slots only where the planner can place": (
        [g(0)], Target(3, "new", placeable=frozenset({0, 1})),
        Step(create=(1,), waiting=("slot 2: no capacity to place a group",))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_next_step(case: str) -> None:
    observed, target, expected = CASES[case]
    assert next_step(observed, target) == expected


def test_rollout_converges_when_steps_are_applied() -> None:
    """Simulate: apply each step, new groups become ready one tick later, drains take 2 ticks."""
    groups = [g(i, "old") for i in range(4)]
    now, peak, low = 0.0, 0, 4
    for _ in range(50):
        step = next_step(groups, Target(4, "new", max_surge=1, drain_timeout=2, now=now))
        if step.empty and not step.waiting:
            break
        groups = [x for x in groups if x.name not in step.delete]
        groups = [Observed(x.index, x.name, x.revision, x.ready, True, now) if x.name in step.drain else x
                  for x in groups]
        groups = [Observed(x.index, x.name, x.revision, True, x.draining, x.drain_started) for x in groups]
        groups += [g(i, "new", ready=False) for i in step.create]
        peak = max(peak, len(groups))
        low = min(low, sum(x.ready and not x.draining for x in groups))
        now += 1
    assert sorted((x.index, x.revision) for x in groups) == [(i, "new") for i in range(4)]
    assert peak <= 5 and low >= 4
