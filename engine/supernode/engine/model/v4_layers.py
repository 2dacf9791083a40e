"""DeepSeek-V4 building blocks: norms, interleaved partial RoPE, mHC mixing (the MoE is in `v4_moe`).

Parameter names follow the checkpoint layout transformers writes (`attn_norm`, `hc_attn_fn`, `ffn.gate`,
`experts.N.w1`...), so safetensors keys load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from supernode.engine.model.layers import full_loader, new_param, set_loader
from supernode.engine.model.rope import rope_frequencies
from supernode.engine.model.v4_config import DeepseekV4Config


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
        # Sinkhorn in place, into preallocated sums: the matrices are tiny, so allocations would dominate.
        # (eps as a tensor: a Python float is converted to a tensor by every op that takes it)
        rows, cols = comb.new_empty(comb.shape[0], n, 1), comb.new_empty(comb.shape[0], 1, n)
        eps = comb.new_tensor(self.eps)
        comb.div_(torch.sum(comb, dim=-2, keepdim=True, out=cols).add_(eps))
        for _ in range(self.iters - 1):
            comb.div_(torch.sum(comb, dim=-1, keepdim=True, out=rows).add_(eps))
            comb.div_(torch.sum(comb, dim=-2, keepdim=True, out=cols).add_(eps))
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
