"""Our DeepSeek-V4 against transformers' DeepseekV4ForCausalLM on the same random tiny weights.

The config has every layer type (sliding, CSA with the lightning indexer, HCA), hash-routed and
top-k-routed MoE layers, YaRN on the compressed layers, mHC with two streams; sequences run past the
sliding window and through several compression windows of each size.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402
from v4_checkpoints import LAYERS, make_reference  # noqa: E402

from supernode.engine.runner import EngineConfig, ModelRunner, SeqInput  # noqa: E402


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ModelRunner]:
    path = tmp_path_factory.mktemp("v4ref")
    ref = make_reference(path)
    runner = ModelRunner(EngineConfig(str(path), num_kv_blocks=96, block_size=4, cpu_threads=1, max_num_seqs=4))
    return ref, runner


def ref_last(model: Any, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([seq])).logits[0, -1].float()


gen = torch.Generator().manual_seed(3)
PROMPTS = ([int(t) for t in torch.randint(2, 128, (37,), generator=gen)], [9, 8, 7, 6, 5], [42])
TABLES = ([50, 3, 17, 88, 4, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77],
          [9, 30, 2, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44],
          [80, 81, 82, 83, 84, 85, 86, 87, 89, 90, 91, 92, 93, 94, 95, 1, 5])  # fmt: skip


def test_prefill_chunked_prefill_and_decode_match_transformers(pair: tuple[Any, ModelRunner]) -> None:
    ref, runner = pair
    p0, p1, p2 = PROMPTS
    out = runner.run([SeqInput(p0[:13], 0, TABLES[0], slot=0), SeqInput(list(p1), 0, TABLES[1], slot=1),
                      SeqInput(list(p2), 0, TABLES[2], slot=2)])  # fmt: skip
    assert out.shape == (3, 128)
    for i, s in enumerate([p0[:13], p1, p2]):
        assert (out[i] - ref_last(ref, s)).abs().max().item() <= 1e-4
    seqs = [list(p0), [*p1, int(out[1].argmax())], [*p2, int(out[2].argmax())]]
    # the rest of prompt 0 (past the window and several windows of both sizes) beside two decodes
    out = runner.run([SeqInput(seqs[0][13:], 13, TABLES[0], slot=0),
                      SeqInput(seqs[1][-1:], len(seqs[1]) - 1, TABLES[1], slot=1),
                      SeqInput(seqs[2][-1:], len(seqs[2]) - 1, TABLES[2], slot=2)])  # fmt: skip
    for step in range(20):
        for i, s in enumerate(seqs):
            diff = (out[i] - ref_last(ref, s)).abs().max().item()
            assert diff <= 1e-4, f"step {step} seq {i}: max abs diff {diff}"
            s.append(int(out[i].argmax()))
        out = runner.run(
            [SeqInput(s[-1:], len(s) - 1, t, slot=i) for i, (s, t) in enumerate(zip(seqs, TABLES, strict=True))]
        )


def test_greedy_generation_matches_transformers_generate(pair: tuple[Any, ModelRunner]) -> None:
    ref, runner = pair
    prompts = ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [100, 50])
    tables = (list(range(0, 24)), list(range(24, 48)))
    seqs = [list(p) for p in prompts]
    out = runner.run([SeqInput(list(p), 0, t, slot=i) for i, (p, t) in enumerate(zip(prompts, tables, strict=True))])
    for _ in range(64):
        for s, row in zip(seqs, out, strict=True):
            s.append(int(row.argmax()))
        out = runner.run(
            [SeqInput(s[-1:], len(s) - 1, t, slot=i) for i, (s, t) in enumerate(zip(seqs, tables, strict=True))]
        )
    ref.generation_config.eos_token_id = None  # the engine runner does not stop; neither may generate
    for p, s in zip(prompts, seqs, strict=True):
        expected = ref.generate(torch.tensor([p]), max_new_tokens=64, do_sample=False)[0].tolist()
        assert s == expected


def test_recompute_after_preemption_and_resume_from_snapshot(pair: tuple[Any, ModelRunner]) -> None:
    """A sequence recomputed in a new slot on new scattered blocks, and one resumed from a boundary snapshot."""
    ref, runner = pair
    seq = PROMPTS[0][:30]
    first = runner.run([SeqInput(seq[:21], 0, [7, 70, 21, 45, 12, 33], slot=3, saves=((4, 16),))])
    assert (first[0] - ref_last(ref, seq[:21])).abs().max().item() <= 1e-4
    # preempted: everything freed; recomputed from scratch elsewhere, in two chunks
    table = [58, 6, 91, 19, 25, 26, 27, 28]
    runner.run([SeqInput(seq[:9], 0, table, slot=1)])
    out = runner.run([SeqInput(seq[9:], 9, table, slot=1)])
    assert (out[0] - ref_last(ref, seq)).abs().max().item() <= 1e-4
    # a prefix hit: the first 16 tokens' blocks are shared, the state comes from the snapshot
    shared = [7, 70, 21, 45]
    out = runner.run([SeqInput(seq[16:], 16, [*shared, 52, 53, 54, 55], slot=2, restore=4)])
    assert (out[0] - ref_last(ref, seq)).abs().max().item() <= 1e-4


def test_mtp_weights_are_skipped_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_reference(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["mtp.0.attn.wq_a.weight"] = torch.zeros(16, 32)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level(logging.INFO):
        runner = ModelRunner(EngineConfig(str(tmp_path), num_kv_blocks=8, block_size=4, cpu_threads=1, max_num_seqs=2))
    assert any("mtp" in r.getMessage() for r in caplog.records)
    assert runner.run([SeqInput([1, 2, 3], 0, [0], slot=0)]).shape == (1, 128)


def test_compress_ratios_spelling_reads_like_compress_rates(pair: tuple[Any, ModelRunner]) -> None:
    from supernode.engine.model.v4_config import DeepseekV4Config

    _, runner = pair
    raw = json.loads((Path(runner.config.model_dir) / "config.json").read_text())
    legacy = {k: v for k, v in raw.items() if k not in ("layer_types", "compress_rates")}
    legacy["compress_ratios"] = [0, 4, 8, 4]
    modern, old = DeepseekV4Config.from_hf(raw), DeepseekV4Config.from_hf(legacy)
    assert old.layer_types == modern.layer_types == tuple(LAYERS)
    assert old.compress_rates == modern.compress_rates


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(pair: tuple[Any, ModelRunner]) -> None:
    _, cpu = pair
    seq = PROMPTS[0]
    gpu = ModelRunner(cpu.config.replace(device="cuda", num_kv_blocks=16))
    ref = ModelRunner(cpu.config.replace(num_kv_blocks=16))
    for runner in (gpu, ref):
        runner.run([SeqInput(seq[:20], 0, [3, 9, 1, 0, 12, 5, 6, 7, 8, 10], slot=0)])
    batch = [SeqInput(seq[20:], 20, [3, 9, 1, 0, 12, 5, 6, 7, 8, 10], slot=0), SeqInput([4, 5, 6], 0, [2, 4], slot=1)]
    got, expected = gpu.run(batch), ref.run(batch)
    assert got.device.type == "cuda"
    assert (got.cpu() - expected).abs().max().item() <= 1e-3


def test_block_size_larger_than_the_compression_windows(pair: tuple[Any, ModelRunner]) -> None:
    """Block 16: several CSA and HCA entries per block (the other tests have blocks no larger than a window)."""
    ref, small_blocks = pair
    runner = ModelRunner(small_blocks.config.replace(block_size=16, num_kv_blocks=12))
    seq, table = list(PROMPTS[0]), [9, 2, 7, 4]
    out = runner.run([SeqInput(seq[:19], 0, table, slot=0), SeqInput([3, 4, 5], 0, [11], slot=1)])
    out = runner.run([SeqInput(seq[19:], 19, table, slot=0)])
    for _ in range(6):
        assert (out[0] - ref_last(ref, seq)).abs().max().item() <= 1e-4
        seq.append(int(out[0].argmax()))
        out = runner.run([SeqInput(seq[-1:], len(seq) - 1, table, slot=0)])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_key_value_heads", 2, "num_key_value_heads: not implemented"),
    ("hidden_act", "gelu", "hidden_act: not implemented"),
    ("scoring_func", "tanh", "scoring_func: not implemented"),
    ("compress_ratios", [0, 4, 16, 8], "compress_ratios: values .* match no layer type"),
    ("o_groups", 3, "o_groups: must divide"),
])  # fmt: skip
def test_v4_shapes_the_engine_cannot_run_are_refused_naming_the_field(
    pair: tuple[Any, ModelRunner], field: str, value: Any, message: str
) -> None:
    from supernode.engine.config import ConfigError
    from supernode.engine.model.v4_config import DeepseekV4Config

    raw = json.loads((Path(pair[1].config.model_dir) / "config.json").read_text())
    if field == "compress_ratios":
        raw = {k: v for k, v in raw.items() if k not in ("layer_types", "compress_rates")}
    with pytest.raises(ConfigError, match=message):
        DeepseekV4Config.from_hf({**raw, field: value})
