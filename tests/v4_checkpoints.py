"""A tiny transformers DeepseekV4ForCausalLM with every V4 feature switched on (reference for engine tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

LAYERS = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
          "compressed_sparse_attention"]  # fmt: skip
BASE: dict[str, Any] = dict(
    vocab_size=128, hidden_size=32, moe_intermediate_size=16, num_hidden_layers=4, num_attention_heads=4,
    head_dim=16, q_lora_rank=16, qk_rope_head_dim=8, n_routed_experts=4, num_experts_per_tok=2,
    layer_types=LAYERS, mlp_layer_types=["hash_moe", "moe", "moe", "moe"],
    compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8}, sliding_window=8,
    o_groups=2, o_lora_rank=8, index_n_heads=16, index_head_dim=8, index_topk=3, hc_mult=2,
    max_position_embeddings=512, swiglu_limit=0.5,
    rope_parameters={"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64,
                     "beta_fast": 32, "beta_slow": 1},
)  # fmt: skip
# The small swiglu_limit makes the clamp bite on these random weights.


def make_reference(tmp: Path, **overrides: Any) -> Any:
    torch.manual_seed(4321)
    model = _transformers().DeepseekV4ForCausalLM(_transformers().DeepseekV4Config(**{**BASE, **overrides})).eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # transformers zero-initialises these; give every path something to do
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("tid2eid"):
                t.copy_(torch.stack([torch.randperm(BASE["n_routed_experts"], generator=gen)[:2] for _ in t]))
            elif "norm" in name and t.dtype.is_floating_point:
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
            elif any(k in name for k in ("sinks", "position_bias", "e_score", "base", "scale")):
                t.copy_(0.5 * torch.randn(t.shape, generator=gen))
    model.save_pretrained(tmp)
    return model


def _transformers() -> Any:
    import transformers

    return transformers
