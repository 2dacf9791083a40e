"""DeepSeek-V3 causal LM (transformers `deepseek_v3`), with HF parameter names so checkpoints load by key."""

from __future__ import annotations

import re

import torch
from torch import nn

from supernode.engine.model.config import DeepseekV3Config
from supernode.engine.model.layers import MLP, ParallelLMHead, RMSNorm, VocabParallelEmbedding
from supernode.engine.model.mla import MLAttention
from supernode.engine.model.moe import MoE
from supernode.engine.model.paged import AttentionMetadata
from supernode.engine.model.rope import RotaryEmbedding
from supernode.engine.parallel import ParallelContext

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.")
_EXPERT_KEY = re.compile(r"^model\.layers\.\d+\.mlp\.experts\.(\d+)\.")


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DeepseekV3Config, index: int, pctx: ParallelContext, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = MLAttention(cfg, pctx, rotary)
        self.mlp: nn.Module
        if index >= cfg.first_k_dense_replace:
            self.mlp = MoE(cfg, pctx)
        else:
            self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, pctx.tp_rank, pctx.tp_size, pctx, True)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        h: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
        kv_cache: torch.Tensor,
    ) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos_sin, meta, kv_cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class DeepseekV3Inner(nn.Module):
    def __init__(self, cfg: DeepseekV3Config, pctx: ParallelContext, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, pctx)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, pctx, rotary) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DeepseekV3ForCausalLM(nn.Module):
    """forward(tokens, positions, meta, kv_caches) -> final hidden states; compute_logits picks rows."""

    def __init__(self, cfg: DeepseekV3Config, pctx: ParallelContext) -> None:
        super().__init__()
        self.cfg, self.pctx = cfg, pctx
        self.rotary = RotaryEmbedding(cfg.rope, cfg.qk_rope_head_dim, cfg.rope_interleave)
        self.model = DeepseekV3Inner(cfg, pctx, self.rotary)
        tie = self.model.embed_tokens if cfg.tie_word_embeddings else None
        self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size, pctx, tie)
        self.local_experts = pctx.local_experts(cfg.n_routed_experts)

    def kv_cache_dim(self) -> int:
        """Cached values per token per layer: the KV latent plus the shared roped key."""
        return self.cfg.kv_lora_rank + self.cfg.qk_rope_head_dim

    def skip_checkpoint_key(self, key: str) -> bool:
        """Keys that exist in HF checkpoints but are not ours to load (other ranks' experts, MTP layers)."""
        layer = _LAYER_KEY.match(key)
        if layer and int(layer.group(1)) >= self.cfg.num_hidden_layers:
            return True  # multi-token-prediction layers (num_nextn_predict_layers) are not used
        expert = _EXPERT_KEY.match(key)
        if expert and int(expert.group(1)) not in self.local_experts:
            return True
        if self.cfg.tie_word_embeddings and key == "lm_head.weight":
            return True
        return key.endswith("rotary_emb.inv_freq")

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: list[torch.Tensor],
    ) -> torch.Tensor:
        h = self.model.embed_tokens(tokens)
        cos_sin = self.rotary.cos_sin(positions, h.dtype)
        for layer, cache in zip(self.model.layers, kv_caches, strict=True):
            h = layer(h, cos_sin, meta, cache)
        return self.model.norm(h)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()
