"""The pools of a ModelDeployment, each as a single-pool deployment the planner and builders already know.

A spec without `pools` is one unnamed pool (name ""): its view is the deployment itself, so every
name, label and revision stays what it was before pools existed. With `pools`, each entry becomes a
*view*: the deployment with the pool's fields put over the top-level ones and `pools` holding just
that entry, which is how `pool_name` recognises it. A view of a view is the view itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supernode.api.models import ModelDeployment, PoolSpec

# PoolSpec fields that replace the top-level field of the same name.
OVERRIDES = ("accelerator", "parallelism", "engine", "placement", "resources", "replicas")


@dataclass(frozen=True, slots=True)
class PoolView:
    name: str  # "" for a deployment without pools
    md: ModelDeployment
    capacity_weight: float = 1.0


def pool_views(md: ModelDeployment) -> list[PoolView]:
    """One view per pool, in spec order (one unnamed view when `spec.pools` is empty)."""
    if not md.spec.pools:
        return [PoolView("", md)]
    return [PoolView(p.name, _view(md, p), p.capacity_weight) for p in md.spec.pools]


def _view(md: ModelDeployment, pool: PoolSpec) -> ModelDeployment:
    update: dict[str, Any] = {k: v for k in OVERRIDES if (v := getattr(pool, k)) is not None}
    update["pools"] = [pool]
    # model_copy does not validate: the view is the parsed spec with fields swapped, nothing new to check.
    return md.model_copy(update={"spec": md.spec.model_copy(update=update)})


def pool_name(md: ModelDeployment) -> str:
    """The pool a (view of a) deployment stands for: "" without pools, else its one pool's name."""
    pools = md.spec.pools
    if not pools:
        return ""
    if len(pools) > 1:
        raise ValueError(f"{md.metadata.name} has {len(pools)} pools; plan and render each of pool_views()")
    return pools[0].name


def total_replicas(md: ModelDeployment) -> int:
    """Replica groups over every pool."""
    return sum(v.md.spec.replicas for v in pool_views(md))
