"""Per-pool status of a deployment with `spec.pools` (pure): `status.pools` and the printer column's summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from supernode.operator.observe import GroupState


@dataclass(frozen=True, slots=True)
class PoolFacts:
    """One pool as planned this pass."""

    name: str
    accelerator: str
    desired: int
    revision: str
    placeable: int
    capacity_reasons: tuple[str, ...] = ()

    @property
    def limited(self) -> bool:
        return self.placeable < self.desired


def pool_status(serving: Sequence[GroupState], pools: Sequence[PoolFacts]) -> dict[str, Any]:
    """`pools` (one entry per pool, spec order) and `poolSummary` ("a:1/2 b:2/2", ready/desired) from the
    groups that serve (live, inside their pool's replicas)."""
    entries: list[dict[str, Any]] = []
    for p in pools:
        ready = sum(g.ready for g in serving if g.pool == p.name)
        message = (f"{p.placeable}/{p.desired} groups placeable: " + "; ".join(p.capacity_reasons)) if p.limited \
            else f"{ready}/{p.desired} groups ready"
        entries.append({"name": p.name, "accelerator": p.accelerator, "replicas": p.desired, "readyReplicas": ready,
                        "placeableReplicas": p.placeable, "capacityLimited": p.limited, "message": message})
    summary = " ".join(f"{e['name']}:{e['readyReplicas']}/{e['replicas']}" for e in entries)
    return {"pools": entries, "poolSummary": summary}


def combined_reasons(pools: Sequence[PoolFacts]) -> tuple[str, ...]:
    """The capacity reasons of every limited pool, each prefixed with its pool."""
    return tuple(f"pool {p.name}: {why}" for p in pools if p.limited for why in p.capacity_reasons)
