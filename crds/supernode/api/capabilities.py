"""What each engine type can run, checked before anything is rendered or started.

A shape the CRD accepts but an engine cannot run would otherwise fail at pod start and burn the
group's restart budget; the operator reports it as an InvalidSpec condition instead, and
`supernode up` refuses it.
"""

from __future__ import annotations

from supernode.api.models import EngineType, ModelDeploymentSpec


def engine_shape_problem(spec: ModelDeploymentSpec) -> str | None:
    """Why ``spec.engine.type`` cannot run ``spec.parallelism``, or None when it can."""
    if spec.engine.type is not EngineType.BUILTIN:
        return None  # vllm / sglang / mindie validate their own flags at start
    p = spec.parallelism
    if p.pipeline == 1 and p.data == 1 and p.expert in (1, p.tensor):
        return None
    return (
        "spec.parallelism: the builtin engine runs pipeline=1, data=1 and expert equal to 1 or tensor "
        f"(got tensor={p.tensor}, pipeline={p.pipeline}, data={p.data}, expert={p.expert}); "
        "use engine.type vllm, sglang or mindie for this shape"
    )
