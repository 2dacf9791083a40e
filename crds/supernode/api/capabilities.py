"""What each engine type can run, checked before anything is rendered or started.

A shape the CRD accepts but an engine cannot run would otherwise fail at pod start and burn the
group's restart budget; the operator reports it as an InvalidSpec condition instead, and
`supernode up` refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from supernode.api.models import EngineType, ModelDeploymentSpec

BUILTIN_SCHEME = "builtin://"


@dataclass(frozen=True, slots=True)
class PresetShape:
    """What decides how a builtin:// checkpoint can be sharded (kept equal to the engine's presets by a test)."""

    architecture: str  # config.json model_type
    routed_experts: int  # expert parallel must divide this
    shardable: tuple[tuple[str, int], ...]  # (config field, size) that tensor parallel splits


BUILTIN_PRESETS: dict[str, PresetShape] = {
    "tiny": PresetShape("deepseek_v3", 8, (("num_attention_heads", 4), ("intermediate_size", 128),
                                           ("moe_intermediate_size", 32))),
    "small": PresetShape("deepseek_v3", 16, (("num_attention_heads", 8), ("intermediate_size", 1024),
                                             ("moe_intermediate_size", 256))),
    # V4 keeps attention whole on every rank (one shared KV head); TP splits the experts only.
    "tiny-v4": PresetShape("deepseek_v4", 8, (("moe_intermediate_size", 32),)),
    "small-v4": PresetShape("deepseek_v4", 16, (("moe_intermediate_size", 256),)),
}  # fmt: skip


def builtin_preset_problem(spec: ModelDeploymentSpec) -> str | None:
    """Why a builtin:// checkpoint cannot run with ``spec.parallelism`` on the builtin engine, or None."""
    source = spec.model.source
    if spec.engine.type is not EngineType.BUILTIN or not source.startswith(BUILTIN_SCHEME):
        return None
    name = source[len(BUILTIN_SCHEME) :].strip("/")
    shape = BUILTIN_PRESETS.get(name)
    if shape is None:
        return f"spec.model.source: builtin preset {name!r} does not exist (one of {sorted(BUILTIN_PRESETS)})"
    p = spec.parallelism
    if p.expert > 1 and shape.routed_experts % p.expert:
        return (f"spec.parallelism.expert: {p.expert} does not divide the {shape.routed_experts} routed experts "
                f"of {source} ({shape.architecture})")  # fmt: skip
    for field, size in shape.shardable:
        if size % p.tensor:
            return (f"spec.parallelism.tensor: {p.tensor} does not divide {field}={size} of {source} "
                    f"({shape.architecture})")  # fmt: skip
    return None


def engine_shape_problem(spec: ModelDeploymentSpec) -> str | None:
    """Why ``spec.engine.type`` cannot run ``spec.parallelism`` (or its builtin:// model), or None when it can."""
    if spec.engine.type is not EngineType.BUILTIN:
        return None  # vllm / sglang / mindie validate their own flags at start
    p = spec.parallelism
    if p.pipeline == 1 and p.data == 1 and p.expert in (1, p.tensor):
        return builtin_preset_problem(spec)
    return (
        "spec.parallelism: the builtin engine runs pipeline=1, data=1 and expert equal to 1 or tensor "
        f"(got tensor={p.tensor}, pipeline={p.pipeline}, data={p.data}, expert={p.expert}); "
        "use engine.type vllm, sglang or mindie for this shape"
    )
