"""One pool's share of a reconcile pass, and the status facts over every pool (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernode.api import constants as C
from supernode.api.models import ModelDeployment, PoolSpec
from supernode.api.pools import PoolView, pool_name
from supernode.operator import naming as N
from supernode.operator import rollout
from supernode.operator.inputs import PlanInputs, lost_nodes, own_pods
from supernode.operator.observe import GroupState, group_states
from supernode.operator.pool_status import PoolFacts, combined_reasons
from supernode.operator.status import Facts


@dataclass(frozen=True, slots=True)
class PoolPass:
    view: PoolView
    inputs: PlanInputs
    step: rollout.Step

    @property
    def md(self) -> ModelDeployment:
        return self.view.md

    @property
    def pool(self) -> str:
        return self.view.name


@dataclass(frozen=True, slots=True)
class RemovedPool:
    """Groups of a pool no longer in the spec: drained like a scale-down to zero, then deleted."""

    md: ModelDeployment  # a view named after the removed pool, with no replicas
    groups: list[GroupState]
    step: rollout.Step

    @property
    def pool(self) -> str:
        return pool_name(self.md)


def observed(groups: Sequence[GroupState]) -> list[rollout.Observed]:
    """Groups as the rollout planner sees them (routers' `drained` mark included)."""
    return [rollout.Observed(g.index, g.name, g.revision, g.ready, g.draining, g.drain_started,
                             drained=g.annotations.get(C.ANNOTATION_DRAINED) == "true") for g in groups]


def removed_pools(md: ModelDeployment, workloads: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]],
                  nodes: Sequence[Mapping[str, Any]], pools: set[str], now: float) -> list[RemovedPool]:
    """The step for each pool that still has groups but is gone from the spec (a spec gaining `pools` removes
    the unnamed pool ""): its groups are marked draining — the routers stop sending them requests — and
    deleted once drained, idle or past `rollout.drainTimeoutSeconds`, exactly as scaling down drains."""
    ns, label = md.metadata.namespace or "default", N.label_value(md.metadata.name)
    out = []
    for pool in sorted({N.pool_of(w) for w in workloads} - pools):
        groups = group_states([w for w in workloads if N.pool_of(w) == pool], own_pods(pods, ns, label, pool),
                              lost_nodes(nodes))
        if not groups:
            continue
        step = rollout.next_step(observed(groups), rollout.Target(
            replicas=0, revision="", drain_timeout=float(md.spec.rollout.drain_timeout_seconds), now=now))
        spec = md.spec.model_copy(update={"replicas": 0, "pools": [PoolSpec(name=pool, replicas=0)] if pool else []})
        out.append(RemovedPool(md.model_copy(update={"spec": spec}), groups, step))
    return out


def event_prefix(md: ModelDeployment) -> str:
    """"pool NAME " before an event message about a group of a named pool."""
    pool = pool_name(md)
    return f"pool {pool} " if pool else ""


def pool_facts(generation: int | None, selector: str, passes: list[PoolPass], exhausted: tuple[str, ...],
               removed: Sequence[RemovedPool] = ()) -> Facts:
    """Status facts over every pool (one unnamed pool: exactly the single-pool facts); a removed pool still
    draining keeps the deployment Progressing."""
    rolling = any(not pp.step.empty or bool(pp.step.waiting) for pp in passes) or bool(removed)
    if len(passes) == 1 and not passes[0].pool:
        pp = passes[0]
        return Facts(generation=generation, desired=pp.md.spec.replicas, revision=pp.inputs.revision,
                     selector=selector, placeable=pp.inputs.capacity.placeable,
                     capacity_reasons=pp.inputs.capacity.reasons, exhausted=exhausted, rolling=rolling)
    pools = tuple(PoolFacts(pp.pool, pp.md.spec.accelerator.type.value, pp.md.spec.replicas, pp.inputs.revision,
                            pp.inputs.capacity.placeable, pp.inputs.capacity.reasons) for pp in passes)
    return Facts(generation=generation, desired=sum(p.desired for p in pools),
                 revision=",".join(f"{p.name}={p.revision}" for p in pools), selector=selector,
                 placeable=sum(p.placeable for p in pools), capacity_reasons=combined_reasons(pools),
                 exhausted=exhausted, rolling=rolling, pools=pools)
