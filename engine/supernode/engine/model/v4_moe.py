"""DeepSeek-V4 MoE: sqrt-softplus (or sigmoid/softmax) router, hash routing from a token-id table in the first
layers, clamped SwiGLU experts, one shared expert.

Parameter names follow the checkpoint (`ffn.gate.weight`, `ffn.gate.bias`, `ffn.gate.tid2eid`,
`ffn.experts.E.w1/w2/w3`, `ffn.shared_experts.w1/w2/w3`).
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
from supernode.engine.model.v4_config import DeepseekV4Config
from supernode.engine.parallel import ParallelContext


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
        counts = torch.bincount(flat, minlength=self.n_experts)[self.local.start : self.local.stop]
        lo = int((flat < self.local.start).sum())
        pairs = order[lo : lo + int(counts.sum())]  # (token, slot) pairs on local experts, by expert
        routed = torch.zeros_like(x)
        if pairs.numel():
            out = self._experts_grouped(x[pairs // k], counts)
            routed.index_add_(0, pairs // k, (out * weights.flatten()[pairs, None]).to(x.dtype))
        shared = self.shared_experts(x)
        if self.pctx.tp_size > 1:  # both partial over the world: one all-reduce for the sum
            return self.pctx.all_reduce(routed + shared)
        return self.pctx.all_reduce(routed) + shared

    def _experts_grouped(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Rows xs, sorted by local expert, through their experts (each expert's rows in one matmul chain;
        measured faster here than padding every expert to the busiest one for batched matmuls)."""
        outs, start = [], 0
        for e, n in zip(self.local, counts.tolist(), strict=True):
            if n:
                outs.append(self.experts[str(e)](xs[start : start + n]))
                start += n
        return torch.cat(outs)
