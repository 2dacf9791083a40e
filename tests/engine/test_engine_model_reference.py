"""Our DeepSeek-V3 against transformers' DeepseekV3ForCausalLM on the same random tiny weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from supernode.engine.runner import EngineConfig, ModelRunner, SeqInput  # noqa: E402

BASE: dict[str, Any] = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=3, n_group=4,
    topk_group=2, first_k_dense_replace=1, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
    v_head_dim=12, max_position_embeddings=512, routed_scaling_factor=2.5,
)  # fmt: skip
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "original_max_position_embeddings": 32,
        "mscale": 1.0, "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1}  # fmt: skip
VARIANTS = {
    "q_lora+yarn+interleave": dict(q_lora_rank=24, rope_parameters=YARN, rope_interleave=True),
    "direct_q+default_rope+half_split+tied+no_norm_topk": dict(
        q_lora_rank=None, rope_parameters={"rope_type": "default", "rope_theta": 500.0}, rope_interleave=False,
        tie_word_embeddings=True, norm_topk_prob=False, n_shared_experts=2,
    ),
}  # fmt: skip


def make_reference(tmp: Path, **overrides: Any) -> Any:
    torch.manual_seed(1234)
    config = transformers.DeepseekV3Config(**{**BASE, **overrides})
    model = transformers.DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial routing bias and norm weights, so those paths are checked too
        for name, t in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                t.normal_(0, 0.2)
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1)
    model.save_pretrained(tmp)
    return model


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ModelRunner]:
    path = tmp_path_factory.mktemp("ref")
    ref = make_reference(path, **VARIANTS[request.param])
    runner = ModelRunner(EngineConfig(str(path), num_kv_blocks=96, block_size=4, cpu_threads=1))
    return ref, runner


def ref_last_logits(model: Any, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([seq])).logits[0, -1].float()


PROMPTS = ([11, 200, 3, 45, 67, 89, 90, 1, 2, 3, 4, 5, 6, 77, 150, 255, 31], [9, 8, 7, 6, 5], [42])
# Deliberately scattered, shared-nothing block ids.
TABLES = ([50, 3, 17, 88, 4, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74],
          [9, 30, 2, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44],
          [80, 81, 82, 83, 84, 85, 86, 87, 89, 90, 91, 92, 93, 94, 95, 1, 5])  # fmt: skip


def test_prefill_chunked_prefill_and_decode_match_transformers(pair: tuple[Any, ModelRunner]) -> None:
    ref, runner = pair
    # step 1: prompt 0 only partly (chunked prefill), prompts 1 and 2 whole
    out = runner.run([SeqInput(list(PROMPTS[0][:7]), 0, TABLES[0]), SeqInput(list(PROMPTS[1]), 0, TABLES[1]),
                      SeqInput(list(PROMPTS[2]), 0, TABLES[2])])  # fmt: skip
    assert out.dtype == torch.float32 and out.shape == (3, 256)
    expected = [
        ref_last_logits(ref, PROMPTS[0][:7]),
        ref_last_logits(ref, PROMPTS[1]),
        ref_last_logits(ref, PROMPTS[2]),
    ]
    assert max((out[i] - expected[i]).abs().max().item() for i in range(3)) <= 1e-4
    # step 2: the rest of prompt 0 alongside decodes of 1 and 2
    seqs = [list(PROMPTS[0]), [*PROMPTS[1], int(out[1].argmax())], [*PROMPTS[2], int(out[2].argmax())]]
    out = runner.run([SeqInput(seqs[0][7:], 7, TABLES[0]), SeqInput(seqs[1][-1:], len(seqs[1]) - 1, TABLES[1]),
                      SeqInput(seqs[2][-1:], len(seqs[2]) - 1, TABLES[2])])  # fmt: skip
    for step in range(12):
        for i, s in enumerate(seqs):
            diff = (out[i] - ref_last_logits(ref, s)).abs().max().item()
            assert diff <= 1e-4, f"step {step} seq {i}: max abs diff {diff}"
            s.append(int(out[i].argmax()))
        out = runner.run([SeqInput(s[-1:], len(s) - 1, t) for s, t in zip(seqs, TABLES, strict=True)])


def test_greedy_generation_matches_transformers_generate(pair: tuple[Any, ModelRunner]) -> None:
    ref, runner = pair
    prompts = ([1, 2, 3, 4, 5, 6, 7, 8, 9], [200, 100])
    tables = ([70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
              [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 46, 47, 48, 49, 51, 52, 53, 54])  # fmt: skip
    seqs = [list(p) for p in prompts]
    out = runner.run([SeqInput(list(p), 0, t) for p, t in zip(prompts, tables, strict=True)])
    for _ in range(64):
        for s, row in zip(seqs, out, strict=True):
            s.append(int(row.argmax()))
        out = runner.run([SeqInput(s[-1:], len(s) - 1, t) for s, t in zip(seqs, tables, strict=True)])
    for p, s in zip(prompts, seqs, strict=True):
        expected = ref.generate(
            torch.tensor([p]), max_new_tokens=64, min_new_tokens=64, do_sample=False, attention_mask=None
        )[0].tolist()
        assert s == expected


def test_bfloat16_runs_close_to_float32(pair: tuple[Any, ModelRunner]) -> None:
    ref, runner = pair
    bf16 = ModelRunner(runner.config.replace(dtype="bfloat16", num_kv_blocks=8))
    assert bf16.kv_caches[0].dtype == torch.bfloat16
    got = bf16.run([SeqInput(list(PROMPTS[1]), 0, [0, 1])])
    expected = ref_last_logits(ref, PROMPTS[1])
    assert got.dtype == torch.float32
    assert (got[0] - expected).abs().max().item() < 0.1 * expected.abs().max().item() + 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(pair: tuple[Any, ModelRunner]) -> None:
    _, cpu = pair
    gpu = ModelRunner(cpu.config.replace(device="cuda", num_kv_blocks=16))
    batch = [SeqInput(list(PROMPTS[0]), 0, [3, 9, 1, 0, 12]), SeqInput(list(PROMPTS[1]), 0, [2, 4])]
    ref = ModelRunner(cpu.config.replace(num_kv_blocks=16)).run(batch)
    got = gpu.run(batch)
    assert got.device.type == "cuda"
    assert (got.cpu() - ref).abs().max().item() <= 1e-3


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "default", "rope_theta": 10000.0},
        YARN,
        {"rope_type": "yarn", "rope_theta": 50000.0, "factor": 40.0, "original_max_position_embeddings": 64,
         "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 16, "beta_slow": 2},
        {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "attention_factor": 1.3, "truncate": False},
    ],
)  # fmt: skip
def test_rope_frequencies_and_scales_match_transformers(rope: dict[str, Any]) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding, yarn_apply_mscale

    from supernode.engine.model.config import RopeConfig
    from supernode.engine.model.rope import rope_frequencies, softmax_scale

    hf_config = transformers.DeepseekV3Config(**{**BASE, "rope_parameters": dict(rope)})
    ours = RopeConfig.from_hf(hf_config.to_dict())
    init = DeepseekV3RotaryEmbedding.compute_default_rope_parameters
    if rope["rope_type"] != "default":
        init = ROPE_INIT_FUNCTIONS[rope["rope_type"]]
    expected_freq, expected_scaling = init(hf_config)
    got_freq, got_scaling = rope_frequencies(ours, BASE["qk_rope_head_dim"])
    torch.testing.assert_close(got_freq, expected_freq)
    assert got_scaling == pytest.approx(expected_scaling)
    qk = BASE["qk_nope_head_dim"] + BASE["qk_rope_head_dim"]
    assert softmax_scale(ours, qk) == pytest.approx(yarn_apply_mscale(hf_config.rope_parameters, qk**-0.5))


def test_legacy_rope_scaling_is_read_like_rope_parameters() -> None:
    from supernode.engine.model.config import RopeConfig

    legacy = {"max_position_embeddings": 163840, "rope_theta": 10000,
              "rope_scaling": {"type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                               "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096}}  # fmt: skip
    modern = {"max_position_embeddings": 163840,
              "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000, "factor": 40, "beta_fast": 32,
                                  "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
                                  "original_max_position_embeddings": 4096}}  # fmt: skip
    assert RopeConfig.from_hf(legacy) == RopeConfig.from_hf(modern)


def test_missing_config_fields_default_like_transformers() -> None:
    from supernode.engine.model.config import DeepseekV3Config as Ours

    ours = Ours.from_hf({"model_type": "deepseek_v3"})
    theirs = transformers.DeepseekV3Config()
    for name in ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "n_group",
                 "topk_group", "first_k_dense_replace", "routed_scaling_factor", "norm_topk_prob", "kv_lora_rank",
                 "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "max_position_embeddings",
                 "rms_norm_eps", "tie_word_embeddings", "rope_interleave", "attention_bias"):  # fmt: skip
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.rope.theta == theirs.rope_parameters["rope_theta"]
    assert ours.rope.rope_type == theirs.rope_parameters["rope_type"]


def test_single_stream_decode_matches_transformers(pair: tuple[Any, ModelRunner]) -> None:
    """One sequence alone: every decode step is a single token (the MoE's one-token path)."""
    ref, runner = pair
    seq, table = [7, 77, 177], [90, 91, 92, 93, 94, 95, 20]
    out = runner.run([SeqInput(list(seq), 0, table)])
    for _ in range(16):
        diff = (out[0] - ref_last_logits(ref, seq)).abs().max().item()
        assert diff <= 1e-4
        seq.append(int(out[0].argmax()))
        out = runner.run([SeqInput(seq[-1:], len(seq) - 1, table)])
