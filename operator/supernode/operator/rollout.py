"""Rollout and scaling of replica groups as a pure decision: `next_step(observed, target) -> Step`.

Groups live in *slots* 0..replicas-1. A group whose revision differs from the target is replaced
whole: a new group is created in its slot (counted against `maxSurge`), the old one is marked draining
once its successor is ready (or, without surge, while `maxUnavailable` allows), and deleted when it has
been draining for `drainTimeoutSeconds`, serves nothing, or the routers report it idle (`drained`).
Scaling down drains the highest slots first. A group drained at the target revision (a device fault's
pre-separate drain) is replaced once it is deleted: its successor would take its name.
The executor (reconcile.py) only applies the returned step; `supernode operator preview-rollout`
prints steps from the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Observed:
    """One existing group as the rollout planner needs to see it."""

    index: int
    name: str
    revision: str
    ready: bool
    draining: bool = False
    drain_started: float | None = None
    drained: bool = False  # the routers report it idle (no request in flight): no need to wait out the timeout


@dataclass(frozen=True, slots=True)
class Target:
    replicas: int
    revision: str
    max_surge: int = 1
    max_unavailable: int = 0
    drain_timeout: float = 900.0
    now: float = 0.0
    placeable: frozenset[int] | None = None  # slots the planner could place; None = all


@dataclass(frozen=True, slots=True)
class Step:
    create: tuple[int, ...] = ()  # slots to create a target-revision group in
    drain: tuple[str, ...] = ()  # groups to mark draining
    delete: tuple[str, ...] = ()  # groups to delete now
    waiting: tuple[str, ...] = field(default=())  # human-readable reasons nothing more happens yet

    @property
    def empty(self) -> bool:
        return not (self.create or self.drain or self.delete)


def next_step(observed: Sequence[Observed], target: Target) -> Step:
    n, rev = target.replicas, target.revision
    surge = target.max_surge if (target.max_surge or target.max_unavailable) else 1  # both 0 would deadlock
    placeable = target.placeable

    def can_place(slot: int) -> bool:
        return placeable is None or slot in placeable

    create: list[int] = []
    drain: list[str] = []
    delete: list[str] = []
    waiting: list[str] = []

    # 1. Draining groups leave once drained (timeout) or when they serve nothing anyway.
    for g in observed:
        if g.draining:
            started = g.drain_started if g.drain_started is not None else target.now
            if not g.ready or g.drained or target.now - started >= target.drain_timeout:
                delete.append(g.name)
            else:
                waiting.append(f"{g.name}: draining, {target.drain_timeout - (target.now - started):.0f}s left")
    live = [g for g in observed if not g.draining]

    # 2. Scale down: groups beyond the desired slots drain, highest slot first.
    for g in sorted((g for g in live if g.index >= n), key=lambda g: -g.index):
        drain.append(g.name)
    live = [g for g in live if g.index < n]

    by_slot: dict[int, list[Observed]] = {}
    for g in live:
        by_slot.setdefault(g.index, []).append(g)

    # 3. Empty slots get a group (a fill, not a surge). A group still draining in that slot at the target
    # revision has the name the new one would get (naming.group_name): it must be gone first.
    same_name = {g.index: g.name for g in observed if g.draining and g.revision == rev}
    for slot in range(n):
        if slot not in by_slot:
            if slot in same_name:
                waiting.append(f"slot {slot}: {same_name[slot]} drains first (its replacement takes its name)")
            elif can_place(slot):
                create.append(slot)
            else:
                waiting.append(f"slot {slot}: no capacity to place a group")

    # 4. Replace old-revision groups slot by slot.
    total = len(observed) + len(create) - len(delete)
    available = sum(g.ready for g in live)
    min_available = n - target.max_unavailable
    for slot in sorted(by_slot):
        groups = by_slot[slot]
        new = [g for g in groups if g.revision == rev]
        old = [g for g in groups if g.revision != rev]
        if not old:
            continue
        if new and any(g.ready for g in new):
            drain += [g.name for g in old]  # successor ready: availability unchanged
            continue
        if new:
            waiting.append(f"slot {slot}: waiting for {new[0].name} to become ready")
            continue
        if surge > 0 and total < n + surge and can_place(slot):
            create.append(slot)
            total += 1
        elif target.max_unavailable > 0 and all(not g.ready for g in old):
            drain += [g.name for g in old]  # not serving: replacing it costs no availability
        elif target.max_unavailable > 0 and available - 1 >= min_available:
            drain += [g.name for g in old]
            available -= 1
        else:
            waiting.append(f"slot {slot}: maxSurge/maxUnavailable allow no more progress")
    return Step(create=tuple(create), drain=tuple(drain), delete=tuple(delete), waiting=tuple(waiting))
