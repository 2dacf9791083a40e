"""One pool's share of a reconcile pass, and the status facts over every pool (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from supernode.api.models import ModelDeployment
from supernode.api.pools import PoolView, pool_name
from supernode.operator import rollout
from supernode.operator.inputs import PlanInputs
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


def event_prefix(md: ModelDeployment) -> str:
    """"pool NAME " before an event message about a group of a named pool."""
    pool = pool_name(md)
    return f"pool {pool} " if pool else ""


def pool_facts(generation: int | None, selector: str, passes: list[PoolPass], exhausted: tuple[str, ...]) -> Facts:
    """Status facts over every pool (one unnamed pool: exactly the single-pool facts)."""
    rolling = any(not pp.step.empty or bool(pp.step.waiting) for pp in passes)
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
