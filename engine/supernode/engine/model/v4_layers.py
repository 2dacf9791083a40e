"""DeepSeek-V4 building blocks: norms, interleaved partial RoPE, mHC mixing, hash/top-k routed MoE.

Parameter names follow the checkpoint layout transformers writes (`attn_norm`, `hc_attn_fn`, `ffn.gate`,
`experts.N.w1`...), so safetensors keys load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from supernode.engine.model.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    full_loader,
    new_param,
    set_loader,
)
from supernode.engine.model.rope import rope_frequencies
from supernode.engine.model.v4_config import DeepseekV4Config
from supernode.engine.parallel import ParallelContext


class V4RMSNorm(nn.Module):
    """RMSNorm with an fp32 weight, applied in fp32 and cast once (as V4's reference does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = set_loader(new_param(dim, dtype=torch.float32), full_loader)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * h).to(x.dtype)


def rms_unweighted(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + eps).to(x.dtype)


class Rope(nn.Module):
    """cos/sin tables for one RoPE setting (V4 has a plain one and a compressed-layer one)."""

    def __init__(self, cfg: DeepseekV4Config, compress: bool) -> None:
        super().__init__()
        rope = cfg.rope_compress if compress else cfg.rope_main
        inv_freq, self.scaling = rope_frequencies(rope, cfg.qk_rope_head_dim)
        self.inv_freq: torch.Tensor
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq.to(positions.device)[None, :]
        return (freqs.cos() * self.scaling).to(dtype), (freqs.sin() * self.scaling).to(dtype)


def rope_tail(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the trailing 2*cos.shape[-1] channels of x [T, ..., D] in interleaved pairs; cos/sin [T, r/2]."""
    half = cos.shape[-1]
    shape = (cos.shape[0],) + (1,) * (x.dim() - 2) + (half,)
    c, s = cos.float().view(shape), sin.float().view(shape)
    nope, rope = x[..., : -2 * half], x[..., -2 * half :].float()
    x1, x2 = rope[..., 0::2], rope[..., 1::2]
    rotated = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2)
    return torch.cat([nope, rotated.to(x.dtype)], dim=-1)


class HyperConnection(nn.Module):
    """mHC around one block: collapse the streams (pre), expand the block output (post), mix streams (comb).

    comb is projected towards a doubly-stochastic matrix with Sinkhorn-Knopp iterations.
    """

    def __init__(self, cfg: DeepseekV4Config) -> None:
        super().__init__()
        n = cfg.hc_mult
        self.n, self.iters, self.eps, self.norm_eps = n, cfg.hc_sinkhorn_iters, cfg.hc_eps, cfg.rms_norm_eps
        self.fn = set_loader(new_param((2 + n) * n, n * cfg.hidden_size, dtype=torch.float32), full_loader)
        self.base = set_loader(new_param((2 + n) * n, dtype=torch.float32), full_loader)
        self.scale = set_loader(new_param(3, dtype=torch.float32), full_loader)

    def weights(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """streams [T, n, D] -> post [T, n], comb [T, n, n] (fp32), collapsed block input [T, D]."""
        n = self.n
        flat = rms_unweighted(streams.reshape(streams.shape[0], -1).float(), self.norm_eps)
        mixed = F.linear(flat, self.fn)
        pre_w, post_w, comb_w = mixed.split([n, n, n * n], dim=-1)
        pre_b, post_b, comb_b = self.base.split([n, n, n * n])
        pre = torch.sigmoid(pre_w * self.scale[0] + pre_b) + self.eps
        post = 2 * torch.sigmoid(post_w * self.scale[1] + post_b)
        comb = torch.softmax(comb_w.view(-1, n, n) * self.scale[2] + comb_b.view(n, n), dim=-1) + self.eps
        comb = comb / (comb.sum(dim=-2, keepdim=True) + self.eps)
        for _ in range(self.iters - 1):
            comb = comb / (comb.sum(dim=-1, keepdim=True) + self.eps)
            comb = comb / (comb.sum(dim=-2, keepdim=True) + self.eps)
        collapsed = (pre.unsqueeze(-1) * streams).sum(dim=1).to(streams.dtype)
        return post, comb, collapsed

    @staticmethod
    def merge(streams: torch.Tensor, out: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
        """New streams: post-weighted block output plus comb^T-mixed old streams."""
        dtype = streams.dtype
        mixed = torch.matmul(comb.to(dtype).transpose(-1, -2), streams)
        return post.to(dtype).unsqueeze(-1) * out.unsqueeze(-2) + mixed


class HyperHead(nn.Module):
    """Final collapse of the mHC streams into one hidden state."""

    def __init__(self, cfg: DeepseekV4Config) -> None:
        super().__init__()
        n = cfg.hc_mult
        self.eps, self.norm_eps = cfg.hc_eps, cfg.rms_norm_eps
        self.hc_fn = set_loader(new_param(n, n * cfg.hidden_size, dtype=torch.float32), full_loader)
        self.hc_base = set_loader(new_param(n, dtype=torch.float32), full_loader)
        self.hc_scale = set_loader(new_param(1, dtype=torch.float32), full_loader)

    def forward(self, streams: torch.Tensor) -> torch.Tensor:
        flat = rms_unweighted(streams.reshape(streams.shape[0], -1).float(), self.norm_eps)
        pre = torch.sigmoid(F.linear(flat, self.hc_fn) * self.hc_scale + self.hc_base) + self.eps
        return (pre.unsqueeze(-1) * streams).sum(dim=1).to(streams.dtype)


class ClampedMLP(nn.Module):
    """SwiGLU with V4's clamp: gate clamped from above, up clamped both ways, at `swiglu_limit`."""

    def __init__(self, hidden: int, inter: int, limit: float, shard: int, shards: int, pctx: ParallelContext) -> None:
        super().__init__()
        self.limit = limit
        self.w1 = ColumnParallelLinear(hidden, inter, shard, shards)
        self.w3 = ColumnParallelLinear(hidden, inter, shard, shards)
        self.w2 = RowParallelLinear(inter, hidden, shard, shards, pctx, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Partial output (not reduced over shards)."""
        gate = F.linear(x, self.w1.weight).clamp(max=self.limit)
        up = F.linear(x, self.w3.weight).clamp(min=-self.limit, max=self.limit)
        return F.linear(F.silu(gate) * up, self.w2.weight)


def _score(logits: torch.Tensor, func: str) -> torch.Tensor:
    if func == "sqrtsoftplus":
        return F.softplus(logits).sqrt()
    if func == "sigmoid":
        return logits.sigmoid()
    return logits.softmax(dim=-1)


class Router(nn.Module):
    """V4 gate: scores by `scoring_func`; experts by top-k of score+bias, or from the token-id table (hash layers).

    The chosen experts' scores are normalised to sum 1 and scaled by `routed_scaling_factor`.
    """

    def __init__(self, cfg: DeepseekV4Config, hashed: bool) -> None:
        super().__init__()
        self.k, self.func, self.scaling, self.hashed = (
            cfg.num_experts_per_tok,
            cfg.scoring_func,
            cfg.routed_scaling_factor,
            hashed,
        )
        self.weight = set_loader(new_param(cfg.n_routed_experts, cfg.hidden_size), full_loader)
        if hashed:
            self.tid2eid = set_loader(new_param(cfg.vocab_size, self.k, dtype=torch.long), full_loader)
        else:
            self.bias = set_loader(new_param(cfg.n_routed_experts, dtype=torch.float32), full_loader)

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = _score(F.linear(x, self.weight), self.func)
        if self.hashed:
            idx = self.tid2eid[token_ids]
        else:
            idx = torch.topk(scores + self.bias, self.k, dim=-1, sorted=False).indices
        weights = scores.gather(1, idx)
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.scaling, idx


class V4MoE(nn.Module):
    """Routed experts (whole experts per rank under EP, else TP shards of each) plus one shared expert."""

    def __init__(self, cfg: DeepseekV4Config, layer: int, pctx: ParallelContext) -> None:
        super().__init__()
        self.pctx, self.n_experts = pctx, cfg.n_routed_experts
        self.gate = Router(cfg, cfg.mlp_layer_types[layer] == "hash_moe")
        self.local = pctx.local_experts(cfg.n_routed_experts)
        shard, shards = pctx.expert_tp_rank, pctx.expert_tp_size
        inter, limit = cfg.moe_intermediate_size, cfg.swiglu_limit
        self.experts = nn.ModuleDict(
            {str(e): ClampedMLP(cfg.hidden_size, inter, limit, shard, shards, pctx) for e in self.local}
        )
        # One shared expert of moe_intermediate_size (transformers' V4 ignores n_shared_experts' count).
        self.shared_experts = ClampedMLP(cfg.hidden_size, inter, limit, pctx.tp_rank, pctx.tp_size, pctx)

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        weights, idx = self.gate(x, token_ids)
        k = idx.shape[1]
        flat = idx.flatten()
        order = torch.sort(flat, stable=True)[1]
        counts = torch.bincount(flat, minlength=self.n_experts).tolist()
        lo = sum(counts[: self.local.start])
        routed = torch.zeros_like(x)
        outs, start = [], lo
        order_local = order[lo : lo + sum(counts[self.local.start : self.local.stop])]
        token = order_local // k
        for e in self.local:
            if n := counts[e]:
                rows = order[start : start + n] // k
                outs.append(self.experts[str(e)](x[rows]))
                start += n
        if outs:
            weighted = (torch.cat(outs) * weights.flatten()[order_local, None]).to(x.dtype)
            routed.index_add_(0, token, weighted)
        shared = self.shared_experts(x)
        if self.pctx.tp_size > 1:  # both partial over the world: one all-reduce for the sum
            return self.pctx.all_reduce(routed + shared)
        return self.pctx.all_reduce(routed) + shared
