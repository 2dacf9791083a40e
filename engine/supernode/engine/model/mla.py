"""Multi-head latent attention (DeepSeek-V2/V3) over a paged cache of compressed latents.

The cache holds, per token, the normalised KV latent (kv_lora_rank) and the roped shared key
(qk_rope_head_dim) — not per-head K/V. Attention runs in latent space ("weight absorption"):
q_nope is projected through kv_b_proj's key half so scores are taken against the latent directly, and
the attended latent is projected through the value half afterwards. Equal, up to rounding, to
expanding K/V per head as transformers does, and far cheaper for decode.
"""

from __future__ import annotations

import torch
from torch import nn

from supernode.engine.model.config import DeepseekV3Config
from supernode.engine.model.layers import ColumnParallelLinear, ReplicatedLinear, RMSNorm, RowParallelLinear
from supernode.engine.model.paged import AttentionMetadata
from supernode.engine.model.rope import RotaryEmbedding, softmax_scale
from supernode.engine.parallel import ParallelContext


class MLAttention(nn.Module):
    def __init__(self, cfg: DeepseekV3Config, pctx: ParallelContext, rotary: RotaryEmbedding) -> None:
        super().__init__()
        tp, rank = pctx.tp_size, pctx.tp_rank
        if cfg.num_attention_heads % tp:
            raise ValueError(f"num_attention_heads={cfg.num_attention_heads} not divisible by tensor_parallel={tp}")
        if cfg.attention_bias:
            raise ValueError("not implemented: attention_bias=true")
        self.heads = cfg.num_attention_heads // tp
        self.nope, self.rope_dim, self.v_dim = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.kv_lora = cfg.kv_lora_rank
        q_out = cfg.num_attention_heads * cfg.qk_head_dim
        self.q_lora = cfg.q_lora_rank
        if cfg.q_lora_rank is None:
            self.q_proj = ColumnParallelLinear(cfg.hidden_size, q_out, rank, tp)
        else:
            self.q_a_proj = ReplicatedLinear(cfg.hidden_size, cfg.q_lora_rank)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
            self.q_b_proj = ColumnParallelLinear(cfg.q_lora_rank, q_out, rank, tp)
        self.kv_a_proj_with_mqa = ReplicatedLinear(cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        self.kv_b_proj = ColumnParallelLinear(
            cfg.kv_lora_rank, cfg.num_attention_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), rank, tp
        )
        self.o_proj = RowParallelLinear(cfg.num_attention_heads * cfg.v_head_dim, cfg.hidden_size, rank, tp, pctx, True)
        self.rotary = rotary
        self.scale = softmax_scale(cfg.rope, cfg.qk_head_dim)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
        kv_cache: torch.Tensor,
    ) -> torch.Tensor:
        """x [T, hidden] -> [T, hidden]; writes the new tokens' latents into kv_cache [blocks, block, C+R]."""
        t = x.shape[0]
        q = self.q_proj(x) if self.q_lora is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(t, self.heads, self.nope + self.rope_dim)
        q_nope, q_pe = q.split([self.nope, self.rope_dim], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_lora, self.rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent)
        cos, sin = cos_sin
        q_pe = self.rotary.rotate(q_pe, cos, sin)
        k_pe = self.rotary.rotate(k_pe, cos, sin)

        flat_cache = kv_cache.view(-1, kv_cache.shape[-1])
        flat_cache.index_copy_(0, meta.slot_mapping, torch.cat([latent, k_pe], dim=-1).to(flat_cache.dtype))

        w = self.kv_b_proj.weight.view(self.heads, self.nope + self.v_dim, self.kv_lora)
        w_uk, w_uv = w[:, : self.nope], w[:, self.nope :]
        q_lat = torch.einsum("thn,hnc->thc", q_nope, w_uk)  # [T, H, C]

        q_full = torch.cat([q_lat, q_pe.to(q_lat.dtype)], dim=-1)  # [T, H, C+R]: one score product
        out_lat = q_lat.new_empty(t, self.heads, self.kv_lora)
        for g in meta.groups:
            b, q_len = g.q_rows.shape
            qg = q_full[g.q_rows.flatten()].view(b, q_len * self.heads, -1)  # [B, Q*H, C+R]
            # index_select over flat slots: far cheaper than 2-D advanced indexing on CPU
            ctx = flat_cache.index_select(0, g.ctx_slots.flatten()).view(b, -1, flat_cache.shape[-1]).to(qg.dtype)
            scores = torch.bmm(qg, ctx.transpose(1, 2)).view(b, q_len, self.heads, -1)  # [B, Q, H, L]
            scores = (scores * self.scale).masked_fill(~g.mask.transpose(1, 2), float("-inf"))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(qg.dtype)
            o = torch.bmm(probs.view(b, q_len * self.heads, -1), ctx[..., : self.kv_lora])
            o = o.view(b, q_len, self.heads, self.kv_lora)  # [B, Q, H, C]
            out_lat[g.q_rows[g.q_valid]] = o[g.q_valid]
        out = torch.einsum("thc,hvc->thv", out_lat, w_uv).reshape(t, self.heads * self.v_dim)
        return self.o_proj(out)
