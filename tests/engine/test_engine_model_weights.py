"""Checkpoint loading (single, sharded, refused formats), config validation, devices, init-checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from supernode.api import chattokens as tokens
from supernode.engine.checkpoint import init_checkpoint
from supernode.engine.config import ConfigError, EngineConfig
from supernode.engine.distributed import DeviceUnavailableError
from supernode.engine.runner import ModelRunner, SeqInput
from supernode.engine.weights import WeightsError

PROMPT = [0, 2, 40, 41, 42, 43, 44, 3, 5]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    init_checkpoint(str(path), "tiny", seed=1)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _logits(model_dir: Path, **kw: object) -> torch.Tensor:
    runner = ModelRunner(EngineConfig(str(model_dir), num_kv_blocks=8, cpu_threads=1, **kw))  # type: ignore[arg-type]
    return runner.run([SeqInput(PROMPT, 0, [3, 1, 0])])


def test_sharded_checkpoint_loads_like_single_file(tiny: Path, tmp_path: Path) -> None:
    sharded = _copy(tiny, tmp_path / "sharded")
    state = load_file(sharded / "model.safetensors")
    os.remove(sharded / "model.safetensors")
    keys = sorted(state)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 3], keys[len(keys) // 3 :])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, sharded / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert torch.equal(_logits(sharded), _logits(tiny))


def test_missing_shard_and_unknown_or_missing_tensors_are_errors(tiny: Path, tmp_path: Path) -> None:
    broken = _copy(tiny, tmp_path / "broken")
    state = load_file(broken / "model.safetensors")
    save_file({**state, "model.layers.0.self_attn.surprise.weight": torch.zeros(2)}, broken / "model.safetensors")
    with pytest.raises(WeightsError, match="surprise"):
        _logits(broken)
    del state["model.norm.weight"]
    save_file(state, broken / "model.safetensors")
    with pytest.raises(WeightsError, match=r"model\.norm\.weight"):
        _logits(broken)
    os.remove(broken / "model.safetensors")
    with pytest.raises(WeightsError, match=r"no model\.safetensors"):
        _logits(broken)


def test_fp8_checkpoints_are_refused_clearly(tiny: Path, tmp_path: Path) -> None:
    by_config = _copy(tiny, tmp_path / "fp8cfg")
    config = json.loads((by_config / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}
    (by_config / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotImplementedError, match="not implemented: FP8 weights"):
        _logits(by_config)
    by_dtype = _copy(tiny, tmp_path / "fp8dtype")
    state = load_file(by_dtype / "model.safetensors")
    key = "model.layers.0.self_attn.o_proj.weight"
    state[key] = state[key].to(torch.float8_e4m3fn)
    save_file(state, by_dtype / "model.safetensors")
    with pytest.raises(NotImplementedError, match="not implemented: FP8 weights"):
        _logits(by_dtype)


def test_bfloat16_checkpoint_loads(tmp_path: Path) -> None:
    init_checkpoint(str(tmp_path), "tiny", seed=1, dtype="bfloat16")
    assert load_file(tmp_path / "model.safetensors")["model.norm.weight"].dtype == torch.bfloat16
    runner = ModelRunner(EngineConfig(str(tmp_path), num_kv_blocks=8, cpu_threads=1))  # dtype auto -> bfloat16
    assert runner.dtype == torch.bfloat16
    assert runner.run([SeqInput(PROMPT, 0, [0, 1, 2])]).dtype == torch.float32


def test_unavailable_devices_fail_at_startup_with_a_clear_error(tiny: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match="npu"):
        ModelRunner(EngineConfig(str(tiny), device="npu"))
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            ModelRunner(EngineConfig(str(tiny), device="cuda"))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"device": "tpu"}, "device"),
        ({"dtype": "int8"}, "dtype"),
        ({"tensor_parallel": 0}, "tensor_parallel"),
        ({"tensor_parallel": 2, "expert_parallel": 4}, "tensor_parallel/expert_parallel"),
        ({"num_kv_blocks": 1}, "num_kv_blocks"),
        ({"kv_cache_memory_fraction": 1.5}, "kv_cache_memory_fraction"),
        ({"heartbeat_timeout_s": 0.1}, "heartbeat_timeout_s"),
        ({"model_dir": "/nonexistent"}, "model_dir"),
    ],
)
def test_engine_config_names_the_bad_field(tiny: Path, changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        EngineConfig(**{"model_dir": str(tiny), **changes})  # type: ignore[arg-type]


def test_unknown_model_type_and_world_mismatch(tiny: Path, tmp_path: Path) -> None:
    other = _copy(tiny, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ConfigError, match="model_type: not implemented: 'llama'"):
        ModelRunner(EngineConfig(str(other)))
    with pytest.raises(ConfigError, match="world size 1"):
        ModelRunner(EngineConfig(str(tiny), tensor_parallel=2))


def test_runner_rejects_bad_batches(tiny: Path) -> None:
    runner = ModelRunner(EngineConfig(str(tiny), num_kv_blocks=4, block_size=4, max_model_len=12))
    with pytest.raises(ValueError, match="empty batch"):
        runner.run([])
    with pytest.raises(ValueError, match="max_model_len"):
        runner.run([SeqInput(list(range(13)), 0, [0, 1, 2, 3])])
    with pytest.raises(ValueError, match="block table has 1 blocks, 2 needed"):
        runner.run([SeqInput(list(range(5)), 0, [0])])
    with pytest.raises(ValueError, match="block id outside"):
        runner.run([SeqInput([1], 0, [4])])


def test_init_checkpoint_cli_writes_a_loadable_checkpoint_and_tokenizer(tmp_path: Path) -> None:
    out = tmp_path / "ck"
    proc = subprocess.run(
        [sys.executable, "-m", "supernode.cli", "engine", "init-checkpoint", str(out), "--preset", "tiny",
         "--seed", "5"],
        env=os.environ.copy(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "wrote tiny checkpoint" in proc.stdout
    names = {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}
    assert names <= set(os.listdir(out))
    config = json.loads((out / "config.json").read_text())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() == config["vocab_size"]
    assert tok.token_to_id(tokens.BOS) == config["bos_token_id"]
    assert tok.token_to_id(tokens.EOS) == config["eos_token_id"]
    text = f"{tokens.BOS}{tokens.USER}Hello, world!{tokens.ASSISTANT}{tokens.THINK_OPEN}"
    ids = tok.encode(text).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert all(tok.token_to_id(t) in ids for t in (tokens.BOS, tokens.USER, tokens.ASSISTANT, tokens.THINK_OPEN))
    transformers = pytest.importorskip("transformers")  # HF key names: transformers loads it to the same logits
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits[0, -1]
    got = ModelRunner(EngineConfig(str(out), num_kv_blocks=8, cpu_threads=1)).run([SeqInput(ids, 0, list(range(8)))])[0]
    assert (got - expected).abs().max().item() <= 1e-4


def test_init_checkpoint_rejects_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        init_checkpoint(str(tmp_path), "huge")


class _SpySlice:
    """Wraps a safetensors slice and records which parts were read."""

    def __init__(self, key: str, inner: Any, reads: dict[str, list[Any]]) -> None:
        self.key, self.inner, self.reads = key, inner, reads

    def get_shape(self) -> list[int]:
        return list(self.inner.get_shape())

    def get_dtype(self) -> str:
        return str(self.inner.get_dtype())

    def __getitem__(self, index: Any) -> torch.Tensor:
        self.reads.setdefault(self.key, []).append(index)
        return self.inner[index]


@pytest.mark.parametrize(("tp", "ep"), [(2, 1), (1, 2)])
def test_each_rank_reads_only_its_shard(tiny: Path, monkeypatch: pytest.MonkeyPatch, tp: int, ep: int) -> None:
    from supernode.engine import weights
    from supernode.engine.model import build_model, parse_model_config
    from supernode.engine.parallel import ParallelContext

    raw = json.loads((tiny / "config.json").read_text())
    full = load_file(tiny / "model.safetensors")
    original = weights._iter_slices
    reads: dict[str, list[Any]] = {}
    monkeypatch.setattr(
        weights, "_iter_slices", lambda paths: ((k, _SpySlice(k, s, reads)) for k, s in original(paths))
    )
    # rank 1 of 2; loading needs no process group (collectives only run in forward)
    model = build_model(parse_model_config(raw), ParallelContext(1, 2, tp, ep, None))
    weights.load_weights(model, str(tiny), raw)
    params = dict(model.named_parameters())
    expert_keys = [k for k in full if ".mlp.experts." in k]
    if ep == 2:  # 8 experts: rank 1 owns 4..7 and never touches 0..3
        assert all(int(k.split(".")[5]) >= 4 for k in expert_keys if k in reads)
        assert all(k in reads for k in expert_keys if int(k.split(".")[5]) >= 4)
        assert torch.equal(params["model.layers.1.mlp.experts.5.up_proj.weight"],
                           full["model.layers.1.mlp.experts.5.up_proj.weight"])  # fmt: skip
    if tp == 2:
        q_b, o = "model.layers.0.self_attn.q_b_proj.weight", "model.layers.0.self_attn.o_proj.weight"
        rows, cols = full[q_b].shape[0] // 2, full[o].shape[1] // 2
        assert reads[q_b] == [slice(rows, 2 * rows)]  # column-parallel: second half of the output rows
        assert torch.equal(params[q_b], full[q_b][rows:])
        assert reads[o] == [(slice(None), slice(cols, 2 * cols))]  # row-parallel: second half of the inputs
        assert torch.equal(params[o], full[o][:, cols:])
        emb = "model.embed_tokens.weight"
        half = full[emb].shape[0] // 2
        assert reads[emb] == [slice(half, 2 * half)]


def test_all_logits_rows_equal_each_prefix_computed_alone(tiny: Path) -> None:
    """Prompt log-probabilities: one item's every-position logits (chunked, batched with another item) are
    what computing each prefix on its own gives."""
    runner = ModelRunner(EngineConfig(str(tiny), num_kv_blocks=16, block_size=4, cpu_threads=1))
    other = [7, 8, 9]
    first = runner.run([SeqInput(PROMPT[:5], 0, [0, 1], all_logits=True), SeqInput(other, 0, [4])])
    rest = runner.run([SeqInput(PROMPT[5:], 5, [0, 1, 2], all_logits=True)])
    assert first.shape[0] == 5 + 1 and rest.shape[0] == len(PROMPT) - 5
    rows = torch.cat([first[:5], rest])
    for n in range(1, len(PROMPT) + 1):
        alone = runner.run([SeqInput(PROMPT[:n], 0, [8, 9, 10])])[0]
        torch.testing.assert_close(rows[n - 1], alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(first[5], runner.run([SeqInput(other, 0, [12])])[0], atol=1e-4, rtol=1e-4)


def test_builtin_preset_shapes_known_to_the_api_match_the_engine_presets() -> None:
    from supernode.api.capabilities import BUILTIN_PRESETS
    from supernode.engine.checkpoint import PRESETS
    from supernode.engine.presets_v4 import V4_COMMON, V4_PRESETS

    configs = {**{k: {"model_type": "deepseek_v3", **v} for k, v in PRESETS.items()},
               **{k: {**V4_COMMON, **v} for k, v in V4_PRESETS.items()}}  # fmt: skip
    assert set(BUILTIN_PRESETS) == set(configs)
    for name, shape in BUILTIN_PRESETS.items():
        cfg = configs[name]
        assert (shape.architecture, shape.routed_experts) == (cfg["model_type"], cfg["n_routed_experts"]), name
        assert all(cfg[field] == size for field, size in shape.shardable), name
