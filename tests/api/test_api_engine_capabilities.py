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
    md = spec_of(make_md("x").engine("builtin").parallelism(tensor=tensor, data=data, expert=expert))
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
