"""Preview a rollout: drive `rollout.next_step` on simulated groups and record each step (pure).

Model: every group starts at the old revision and ready; a created group becomes ready `ready_ticks`
ticks later; a draining group serves until `drainTimeoutSeconds` (one tick = `tick_seconds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supernode.api.models import ModelDeployment
from supernode.api.pools import pool_name
from supernode.operator.rollout import Observed, Step, Target, next_step


@dataclass(frozen=True, slots=True)
class Frame:
    time: float
    step: Step
    groups: tuple[Observed, ...]  # after the step was applied

    @property
    def ready(self) -> int:
        return sum(g.ready and not g.draining for g in self.groups)


def simulate(md: ModelDeployment, *, ready_ticks: int = 3, tick_seconds: float = 60.0,
             max_ticks: int = 1000) -> list[Frame]:
    n, r = md.spec.replicas, md.spec.rollout
    groups = [Observed(i, f"g{i}-old", "old", True) for i in range(n)]
    born: dict[str, float] = {}
    frames: list[Frame] = []
    now = 0.0
    for _ in range(max_ticks):
        groups = [Observed(g.index, g.name, g.revision, g.ready or now - born.get(g.name, -1e9) >= ready_ticks *
                           tick_seconds, g.draining, g.drain_started) for g in groups]
        step = next_step(groups, Target(n, "new", r.max_surge, r.max_unavailable, float(r.drain_timeout_seconds),
                                        now))
        groups = [g for g in groups if g.name not in step.delete]
        groups = [Observed(g.index, g.name, g.revision, g.ready, True, now) if g.name in step.drain else g
                  for g in groups]
        for slot in step.create:
            name = f"g{slot}-new"
            born[name] = now
            groups.append(Observed(slot, name, "new", False))
        if not step.empty:
            frames.append(Frame(now, step, tuple(groups)))
        if all(g.revision == "new" and g.ready and not g.draining for g in groups) and len(groups) == n:
            break
        now += tick_seconds
    return frames


def render(frames: list[Frame], replicas: int) -> str:
    lines = [f"{'t(s)':>7}  {'create':<10} {'drain':<18} {'delete':<18} groups(ready/total)"]
    for f in frames:
        lines.append(f"{f.time:>7.0f}  {','.join(map(str, f.step.create)) or '-':<10} "
                     f"{','.join(f.step.drain) or '-':<18} {','.join(f.step.delete) or '-':<18} "
                     f"{f.ready}/{len(f.groups)} (desired {replicas})")
    peak = max((len(f.groups) for f in frames), default=replicas)
    low = min((f.ready for f in frames), default=replicas)
    lines.append(f"peak groups {peak}, lowest ready {low}, done at t={frames[-1].time if frames else 0:.0f}s")
    return "\n".join(lines)


def ticks_for(ready_seconds: float, tick_seconds: float = 60.0) -> int:
    return max(1, round(ready_seconds / tick_seconds))


def preview_text(md: ModelDeployment, ready_seconds: float = 180.0, tick_seconds: float = 60.0) -> str:
    """What `supernode plan --rollout` and `supernode operator preview-rollout` print for one deployment."""
    r = md.spec.rollout
    pool = f" pool {pool_name(md)}" if pool_name(md) else ""
    head = (f"{md.metadata.name}{pool}: {md.spec.replicas} groups, maxSurge {r.max_surge}, maxUnavailable "
            f"{r.max_unavailable}, drain {r.drain_timeout_seconds}s, new group ready after {ready_seconds:.0f}s")
    frames = simulate(md, ready_ticks=ticks_for(ready_seconds, tick_seconds), tick_seconds=tick_seconds)
    return head + "\n" + render(frames, md.spec.replicas)


def preview_dict(md: ModelDeployment, ready_seconds: float = 180.0, tick_seconds: float = 60.0) -> dict[str, Any]:
    """The same preview as data (for `-o json|yaml`)."""
    frames = simulate(md, ready_ticks=ticks_for(ready_seconds, tick_seconds), tick_seconds=tick_seconds)
    return {"deployment": md.metadata.name, "pool": pool_name(md), "replicas": md.spec.replicas,
            "steps": [{"time": f.time, "create": list(f.step.create), "drain": list(f.step.drain),
                       "delete": list(f.step.delete), "ready": f.ready, "groups": len(f.groups)} for f in frames]}
