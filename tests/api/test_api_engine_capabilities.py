from __future__ import annotations

import pytest
from builders import make_md

from supernode.api.capabilities import engine_shape_problem
from supernode.api.models import ModelDeployment


def spec_of(builder: object) -> ModelDeployment:
    return ModelDeployment.from_obj(builder.obj())  # type: ignore[attr-defined]


@pytest.mark.parametrize(("tensor", "data", "expert"), [(1, 1, 1), (2, 1, 1), (2, 1, 2), (8, 1, 8)])
def test_builtin_runs_tensor_parallel_with_optional_matching_expert_parallel(
    tensor: int, data: int, expert: int
) -> None:
    # a checkpoint whose shape is unknown before start (builtin:// presets are checked too: see below)
    builder = make_md("x").engine("builtin").source("pvc://weights/model")
    md = spec_of(builder.parallelism(tensor=tensor, data=data, expert=expert))
    assert engine_shape_problem(md.spec) is None


@pytest.mark.parametrize(("tensor", "data", "expert"), [(16, 2, 32), (2, 2, 1), (4, 1, 2)])
def test_builtin_refuses_data_parallel_and_partial_expert_parallel_naming_the_field(
    tensor: int, data: int, expert: int
) -> None:
    md = spec_of(make_md("x").engine("builtin").parallelism(tensor=tensor, data=data, expert=expert))
    problem = engine_shape_problem(md.spec)
    assert problem is not None and problem.startswith("spec.parallelism:")
    assert f"tensor={tensor}" in problem


def test_other_engines_are_not_second_guessed() -> None:
    builder = make_md("x").engine("vllm").accelerator("nvidia-h200", 8)
    md = spec_of(builder.parallelism(tensor=8, data=2, expert=16))
    assert engine_shape_problem(md.spec) is None


@pytest.mark.parametrize(("source", "tensor", "expert", "field"), [
    ("builtin://nope", 1, 1, "spec.model.source: builtin preset 'nope' does not exist"),
    ("builtin://tiny-v4", 3, 1, "spec.parallelism.tensor: 3 does not divide moe_intermediate_size=32"),
    ("builtin://tiny-v4", 16, 16, "spec.parallelism.expert: 16 does not divide the 8 routed experts"),
    ("builtin://tiny", 8, 1, "spec.parallelism.tensor: 8 does not divide num_attention_heads=4"),
])  # fmt: skip
def test_builtin_checkpoint_shapes_the_engine_cannot_shard_are_refused(
    source: str, tensor: int, expert: int, field: str
) -> None:
    builder = make_md("x").engine("builtin").source(source).parallelism(tensor=tensor, expert=expert)
    problem = engine_shape_problem(spec_of(builder).spec)
    assert problem is not None and problem.startswith(field), problem


@pytest.mark.parametrize("source", ["builtin://tiny-v4", "builtin://small-v4", "builtin://tiny"])
def test_builtin_checkpoints_run_with_tensor_and_expert_parallel_2(source: str) -> None:
    builder = make_md("x").engine("builtin").source(source).parallelism(tensor=2, expert=2)
    assert engine_shape_problem(spec_of(builder).spec) is None
