"""DeepSeek-V4 causal LM (transformers `deepseek_v4`) over the V4 KV cache (`v4_cache`).

Parameter names are the checkpoint's own (as transformers writes them: `model.layers.N.attn.wq_a`,
`model.layers.N.ffn.experts.E.w1`, `head.weight`...); DeepSeek's original top-level names (`embed.weight`,
`layers.N...`, `hc_head_fn`) are mapped onto them. Multi-token-prediction (`mtp.*`) weights are skipped.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from supernode.engine.model.layers import ParallelLMHead, VocabParallelEmbedding
from supernode.engine.model.v4_attention import V4Attention
from supernode.engine.model.v4_cache import (
    LayerCache,
    StepSeq,
    compressed_bytes_per_block,
    layer_caches,
    state_bytes_per_slot,
)
from supernode.engine.model.v4_config import SLIDING, DeepseekV4Config
from supernode.engine.model.v4_layers import HyperConnection, HyperHead, Rope, V4RMSNorm
from supernode.engine.model.v4_moe import V4MoE
from supernode.engine.parallel import ParallelContext

log = logging.getLogger(__name__)

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.")
_EXPERT_KEY = re.compile(r"^model\.layers\.\d+\.ffn\.experts\.(\d+)\.")
_TOP_LEVEL = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "hc_head_fn": "model.hc_head.hc_fn", "hc_head_base": "model.hc_head.hc_base",
              "hc_head_scale": "model.hc_head.hc_scale", "lm_head.weight": "head.weight"}  # fmt: skip


class V4Block(nn.Module):
    def __init__(self, cfg: DeepseekV4Config, index: int, pctx: ParallelContext) -> None:
        super().__init__()
        self.attn = V4Attention(cfg, index)
        self.ffn = V4MoE(cfg, index, pctx)
        self.attn_norm = V4RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.ffn_norm = V4RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        hc_attn, hc_ffn = HyperConnection(cfg), HyperConnection(cfg)
        # flat names as in the checkpoint: hc_attn_fn / hc_attn_base / hc_attn_scale (same for ffn)
        self.hc_attn_fn, self.hc_attn_base, self.hc_attn_scale = hc_attn.fn, hc_attn.base, hc_attn.scale
        self.hc_ffn_fn, self.hc_ffn_base, self.hc_ffn_scale = hc_ffn.fn, hc_ffn.base, hc_ffn.scale
        self._hc = (hc_attn, hc_ffn)  # a tuple: not registered twice as submodules

    def forward(
        self,
        h: torch.Tensor,
        token_ids: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        seqs: Sequence[StepSeq],
        cache: LayerCache,
        rope: Rope,
    ) -> torch.Tensor:
        hc_attn, hc_ffn = self._hc
        post, comb, x = hc_attn.weights(h)
        h = HyperConnection.merge(h, self.attn(self.attn_norm(x), cos_sin, seqs, cache, rope), post, comb)
        post, comb, x = hc_ffn.weights(h)
        return HyperConnection.merge(h, self.ffn(self.ffn_norm(x), token_ids), post, comb)


class DeepseekV4Inner(nn.Module):
    def __init__(self, cfg: DeepseekV4Config, pctx: ParallelContext) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, pctx)
        self.layers = nn.ModuleList(V4Block(cfg, i, pctx) for i in range(cfg.num_hidden_layers))
        self.norm = V4RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hc_head = HyperHead(cfg)


class DeepseekV4ForCausalLM(nn.Module):
    """forward_step(tokens, seqs, caches) -> final hidden states [T, hidden]; compute_logits picks rows."""

    stateful = True  # the runner allocates `allocate_kv` caches and passes StepSeq lists

    def __init__(self, cfg: DeepseekV4Config, pctx: ParallelContext) -> None:
        super().__init__()
        self.cfg, self.pctx = cfg, pctx
        self.rope_main, self.rope_compress = Rope(cfg, compress=False), Rope(cfg, compress=True)
        self.model = DeepseekV4Inner(cfg, pctx)
        tie = self.model.embed_tokens if cfg.tie_word_embeddings else None
        self.head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size, pctx, tie)
        self.local_experts = pctx.local_experts(cfg.n_routed_experts)
        self._mtp_logged = False

    # --- checkpoint ---------------------------------------------------------------------------------
    def checkpoint_key(self, key: str) -> str:
        """Our parameter name for a checkpoint key (DeepSeek's original or transformers' layout)."""
        if key in _TOP_LEVEL:
            return _TOP_LEVEL[key]
        if key.startswith("layers."):
            return "model." + key
        return key

    def skip_checkpoint_key(self, key: str) -> bool:
        if key.startswith("mtp.") or key.startswith("model.mtp."):
            if not self._mtp_logged:
                log.info("skipping multi-token-prediction (mtp.*) weights: not used for decoding")
                self._mtp_logged = True
            return True
        layer = _LAYER_KEY.match(key)
        if layer and int(layer.group(1)) >= self.cfg.num_hidden_layers:
            return True
        expert = _EXPERT_KEY.match(key)
        if expert and int(expert.group(1)) not in self.local_experts:
            return True
        return self.cfg.tie_word_embeddings and key == "head.weight"

    # --- KV cache -----------------------------------------------------------------------------------
    def allocate_kv(
        self, blocks: int, block_size: int, slots: int, dtype: torch.dtype, device: torch.device
    ) -> list[LayerCache]:
        return layer_caches(self.cfg, blocks, block_size, slots, dtype, device)

    def prefix_boundary(self, block_size: int) -> int:
        """Smallest prefix length a cached prefix may end at: whole blocks and whole compression windows."""
        ratios = [self.cfg.ratio(i) for i in range(self.cfg.num_hidden_layers)]
        return math.lcm(block_size, *[r for r in ratios if r])

    def snapshot_interval(self, block_size: int) -> int:
        """Prefix tokens between state snapshots: the smallest boundary multiple at which a snapshot costs
        no more than the compressed KV of the tokens it covers (so snapshots at most double the cache)."""
        boundary = self.prefix_boundary(block_size)
        per_token = max(1, compressed_bytes_per_block(self.cfg, block_size, 1) // block_size)
        tokens = -(-state_bytes_per_slot(self.cfg, 1) // per_token)
        return max(boundary, -(-tokens // boundary) * boundary)

    def state_bytes_per_slot(self, elem: int) -> int:
        return state_bytes_per_slot(self.cfg, elem)

    def kv_bytes_per_block(self, block_size: int, elem: int) -> int:
        return compressed_bytes_per_block(self.cfg, block_size, elem)

    # --- forward ------------------------------------------------------------------------------------
    def forward_step(self, tokens: torch.Tensor, seqs: Sequence[StepSeq], caches: list[LayerCache]) -> torch.Tensor:
        positions = torch.cat([torch.arange(s.start, s.start + s.n) for s in seqs]).to(tokens.device)
        x = self.model.embed_tokens(tokens)
        h = x.unsqueeze(1).expand(-1, self.cfg.hc_mult, -1).contiguous()
        main = self.rope_main.cos_sin(positions, x.dtype)
        compress = self.rope_compress.cos_sin(positions, x.dtype)
        for i, (layer, cache) in enumerate(zip(self.model.layers, caches, strict=True)):
            sliding = self.cfg.layer_types[i] == SLIDING
            h = layer(h, tokens, main if sliding else compress, seqs, cache, self.rope_compress)
        return self.model.norm(self.model.hc_head(h))

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).float()
