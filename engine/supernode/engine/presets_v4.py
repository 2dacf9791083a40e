"""DeepSeek-V4-shaped presets for `init-checkpoint` (random weights, real architecture).

tiny-v4 spells the compression per layer type (`layer_types` + `compress_rates`, transformers' form);
small-v4 uses the per-layer `compress_ratios` list of DeepSeek's published configs. Both have every
attention layer type, hash-routed first layers and four mHC streams.
"""

from __future__ import annotations

from typing import Any

import torch

V4_COMMON: dict[str, Any] = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "model_type": "deepseek_v4",
    "hidden_act": "silu",
    "num_key_value_heads": 1,
    "n_shared_experts": 1,
    "scoring_func": "sqrtsoftplus",
    "routed_scaling_factor": 1.5,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-6,
    "swiglu_limit": 10.0,
    "rope_theta": 10000.0,
    "compress_rope_theta": 160000.0,
    "initializer_range": 0.02,
    "num_nextn_predict_layers": 0,
}

V4_PRESETS: dict[str, dict[str, Any]] = {
    # ~0.4M parameters: unit tests, e2e, the local runtime's default.
    "tiny-v4": {
        "vocab_size": 512, "hidden_size": 64, "moe_intermediate_size": 32, "num_hidden_layers": 4,
        "num_attention_heads": 4, "head_dim": 32, "qk_rope_head_dim": 8, "q_lora_rank": 32,
        "o_groups": 2, "o_lora_rank": 16, "n_routed_experts": 8, "num_experts_per_tok": 2,
        "layer_types": ["heavily_compressed_attention", "sliding_attention", "compressed_sparse_attention",
                        "heavily_compressed_attention"],
        "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
        "mlp_layer_types": ["hash_moe", "moe", "moe", "moe"],
        "sliding_window": 16, "index_n_heads": 4, "index_head_dim": 16, "index_topk": 8,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
                            "beta_fast": 32, "beta_slow": 1},
    },
    # ~25M parameters: benchmarks.
    "small-v4": {
        "vocab_size": 1024, "hidden_size": 384, "moe_intermediate_size": 256, "num_hidden_layers": 6,
        "num_attention_heads": 8, "head_dim": 128, "qk_rope_head_dim": 32, "q_lora_rank": 192,
        "o_groups": 4, "o_lora_rank": 128, "n_routed_experts": 16, "num_experts_per_tok": 4,
        "compress_ratios": [128, 128, 4, 128, 4, 0], "num_hash_layers": 2,
        "sliding_window": 128, "index_n_heads": 16, "index_head_dim": 64, "index_topk": 64,
        "max_position_embeddings": 8192,
        "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                            "beta_fast": 32, "beta_slow": 1},
    },
}  # fmt: skip

# Parameters DeepSeek keeps in fp32 whatever the checkpoint dtype.
_FP32 = ("norm.weight", "hc_", "attn_sink", ".ape", "ffn.gate.")


def keep_fp32(name: str) -> bool:
    return any(k in name for k in _FP32)


def init_v4_(model: torch.nn.Module, generator: torch.Generator, std: float, experts: int) -> None:
    """Random weights; norms 1, sinks / position biases / router biases 0, mHC scales 1, hash table a random
    choice of distinct experts per token."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("_scale") or name.endswith("hc_scale"):
                p.fill_(1.0)
            elif name.endswith(("attn_sink", ".ape", "gate.bias", "_base", "hc_base")):
                p.zero_()
            elif name.endswith("tid2eid"):
                rows = [torch.randperm(experts, generator=generator)[: p.shape[1]] for _ in range(p.shape[0])]
                p.copy_(torch.stack(rows))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
