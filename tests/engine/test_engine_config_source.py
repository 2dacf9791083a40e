"""One configuration source: EngineConfig drives the serve flags, ServeOptions and the scheduler's limits."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from supernode.api import constants as C
from supernode.cli import engine_serve
from supernode.engine.config import EngineConfig, flag_fields
from supernode.engine.core.context import ContextLengthExceeded, check_prompt_fits
from supernode.engine.engine_types import EngineOptions


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deepseek_v3"}))
    return tmp_path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    engine_serve.register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


@pytest.fixture(autouse=True)
def _no_pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (C.ENV_MODEL_DIR, C.ENV_DEVICE, C.ENV_TENSOR_PARALLEL, C.ENV_EXPERT_PARALLEL, C.ENV_DEVICES_PER_POD):
        monkeypatch.delenv(var, raising=False)


def test_every_engine_field_is_a_flag_and_unset_flags_keep_the_config_defaults(model_dir: Path) -> None:
    opts = engine_serve.options(parse(str(model_dir)))
    assert opts.engine == EngineConfig(str(model_dir))
    fields = {f.name for f in dataclasses.fields(EngineConfig)} - {"model_dir"}
    assert {f.name for f in flag_fields()} == fields
    assert all(hasattr(parse(str(model_dir)), name) for name in fields)


def test_max_num_seqs_has_one_default_and_flows_to_the_scheduler(model_dir: Path) -> None:
    default = EngineConfig(str(model_dir)).max_num_seqs
    assert EngineOptions("m", 128).max_num_seqs == default  # the loop's default is the config's
    opts = engine_serve.options(parse(str(model_dir), "--max-num-seqs", "5", "--max-num-batched-tokens", "77"))
    sched = EngineOptions.from_config(opts.engine, "m", 321).scheduler_config()
    assert (sched.max_num_seqs, sched.max_num_batched_tokens, sched.max_model_len) == (5, 77, 321)


def test_flags_round_trip_through_as_flags(model_dir: Path) -> None:
    cfg = EngineConfig(str(model_dir), max_num_seqs=3, num_kv_blocks=40, dtype="bfloat16", heartbeat_timeout_s=9.5)
    assert engine_serve.options(parse(*cfg.as_flags())).engine == cfg


@pytest.mark.parametrize(
    "argv",
    [["{d}"], ["--model", "{d}"], ["--model-dir", "{d}"], ["{d}", "--model", "{d}"], ["{d}", "--max-num-seqs", "2"]],
)
def test_model_dir_the_way_vllm_users_type_it(model_dir: Path, argv: list[str]) -> None:
    args = parse(*(a.format(d=model_dir) for a in argv))
    assert engine_serve.options(args).engine.model_dir == str(model_dir)


def test_model_dir_from_env_and_conflicts(model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_dir: required"):
        engine_serve.options(parse())
    with pytest.raises(ValueError, match="given twice"):
        engine_serve.options(parse(str(model_dir), "--model", str(tmp_path / "other")))
    monkeypatch.setenv(C.ENV_MODEL_DIR, str(model_dir))
    monkeypatch.setenv(C.ENV_DEVICE, "cuda")
    monkeypatch.setenv(C.ENV_TENSOR_PARALLEL, "2")
    opts = engine_serve.options(parse())
    assert (opts.engine.model_dir, opts.engine.device, opts.engine.tensor_parallel) == (str(model_dir), "cuda", 2)
    assert engine_serve.options(parse("--device", "cpu", "--tensor-parallel-size", "1")).engine.device == "cpu"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert engine_serve.options(parse(str(other))).engine.model_dir == str(other)  # the pod env is a fallback


def test_bad_flag_values_name_the_field(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse(str(model_dir), "--max-num-seqs", "0").func(parse(str(model_dir), "--max-num-seqs", "0")) == 2
    assert "max_num_seqs" in capsys.readouterr().err


def test_follower_argv_reproduces_the_engine_config(model_dir: Path) -> None:
    opts = engine_serve.options(parse(str(model_dir), "--served-model-name", "x", "--max-waiting", "3"))
    follower = engine_serve.options(parse(*opts.follower_argv(), "--local-rank", "1"))
    assert follower.engine == opts.engine and follower.model_name == "x" and follower.local_rank == 1


@pytest.mark.parametrize(("prompt", "limit", "fits"), [(7, 8, True), (8, 8, False), (100, 8, False), (0, 1, True)])
def test_context_rule(prompt: int, limit: int, fits: bool) -> None:
    if fits:
        check_prompt_fits(prompt, limit)
    else:
        with pytest.raises(ContextLengthExceeded, match=f"context is {limit}"):
            check_prompt_fits(prompt, limit)
