"""Autoscaling a deployment with pools (pure): the decision sizes the whole deployment (the groups of every
pool together, as for any deployment); this module bounds that total and shares a change out per pool.

- Each pool stays within its own `minReplicas` (default 0) and `maxReplicas` (default
  `autoscaling.maxReplicas`); the total within `autoscaling.minReplicas`/`maxReplicas` and the pools' sums.
- Up: one group at a time to the pool with spare nodes (the planner could place one more there now) and
  the best capacity per group — measured by the routers when they report it, else the declared
  `capacityWeight`; ties go to the pool with fewer groups, then to the earlier pool in the spec. When no
  pool has spare nodes, the best pool under its maximum still gets it (and waits, CapacityLimited).
- Down: one group at a time from the pool above its minimum with the lowest capacity per group; ties go
  to the pool with more groups, then to the later pool. The reconcile pass then drains that pool's
  highest group as any scale-down does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from supernode.api.models import ModelDeployment
from supernode.api.pools import pool_views


@dataclass(frozen=True, slots=True)
class PoolRoom:
    """One pool as the split sees it."""

    name: str
    replicas: int  # groups it has now (spec)
    min: int
    max: int
    placeable: int  # most groups the planner could place for it now (one more than it has, at most)
    weight: float  # capacity per group: measured by the routers, else the declared capacityWeight


def bounds(md: ModelDeployment) -> tuple[int, int]:
    """(fewest, most) groups over all pools: the autoscaling bounds, narrowed by the pools' own."""
    auto = md.spec.autoscaling
    assert auto is not None
    lo = sum(p.min_replicas or 0 for p in md.spec.pools)
    hi = sum(auto.max_replicas if p.max_replicas is None else p.max_replicas for p in md.spec.pools)
    return min(max(auto.min_replicas, lo), hi), max(lo, min(auto.max_replicas, hi))


def rooms(md: ModelDeployment, placeable: Mapping[str, int], measured: Mapping[str, float],
          replicas: Mapping[str, int] | None = None) -> list[PoolRoom]:
    """The pools of `md` in spec order; `replicas` overrides the spec's counts (what we wrote last)."""
    auto = md.spec.autoscaling
    assert auto is not None
    out = []
    for pool, view in zip(md.spec.pools, pool_views(md), strict=True):
        now = (replicas or {}).get(pool.name, view.md.spec.replicas)
        top = auto.max_replicas if pool.max_replicas is None else pool.max_replicas
        out.append(PoolRoom(pool.name, now, pool.min_replicas or 0, top, placeable.get(pool.name, now),
                            measured.get(pool.name) or pool.capacity_weight))
    return out


def split(desired: int, pools: Sequence[PoolRoom]) -> dict[str, int]:
    """Replicas per pool for `desired` groups in all (as near as the pools' bounds allow)."""
    now = {p.name: min(max(p.replicas, p.min), p.max) for p in pools}
    order = {p.name: i for i, p in enumerate(pools)}
    total = sum(now.values())
    while total < desired:
        under = [p for p in pools if now[p.name] < p.max]
        if not under:
            break
        spare = [p for p in under if now[p.name] < p.placeable]
        pick = max(spare or under, key=lambda p: (p.weight, -now[p.name], -order[p.name]))
        now[pick.name] += 1
        total += 1
    while total > desired:
        over = [p for p in pools if now[p.name] > p.min]
        if not over:
            break
        pick = min(over, key=lambda p: (p.weight, -now[p.name], -order[p.name]))
        now[pick.name] -= 1
        total -= 1
    return now


def describe(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """"pool h200 1 -> 2, pool ascend 2 -> 1" for the pools that change."""
    return ", ".join(f"pool {name} {before.get(name, 0)} -> {n}" for name, n in after.items()
                     if before.get(name, 0) != n)


def group_concurrency(md: ModelDeployment) -> int:
    """Requests one group serves at once, for the decision: the pools' engine.maxConcurrency, averaged over
    their groups (over the pools when none has a group)."""
    views = pool_views(md)
    groups = sum(v.md.spec.replicas for v in views)
    if groups:
        return max(1, round(sum(v.md.spec.engine.max_concurrency * v.md.spec.replicas for v in views) / groups))
    return max(1, round(sum(v.md.spec.engine.max_concurrency for v in views) / len(views)))
