"""DeepSeekMoE: sigmoid-scored, group-limited top-k routing over routed experts, plus shared experts.

Routing matches transformers' `DeepseekV3TopkRouter` (fp32 scores, e_score_correction_bias only for
choosing, top-2 sum per group, norm_topk_prob, routed_scaling_factor). Each rank holds either a
contiguous range of whole experts (expert parallel) or a TP shard of every expert; either way each
rank's output is a partial sum and one all-reduce combines them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from supernode.engine.model.config import DeepseekV3Config
from supernode.engine.model.layers import MLP, full_loader, new_param, set_loader
from supernode.engine.parallel import ParallelContext


class TopkRouter(nn.Module):
    def __init__(self, cfg: DeepseekV3Config) -> None:
        super().__init__()
        self.n_experts, self.top_k = cfg.n_routed_experts, cfg.num_experts_per_tok
        self.n_group, self.topk_group = cfg.n_group, cfg.topk_group
        self.norm_topk_prob, self.scaling = cfg.norm_topk_prob, cfg.routed_scaling_factor
        # transformers keeps the router in fp32 whatever the model dtype; so do we.
        self.weight = set_loader(new_param(cfg.n_routed_experts, cfg.hidden_size, dtype=torch.float32), full_loader)
        self.e_score_correction_bias = set_loader(new_param(cfg.n_routed_experts, dtype=torch.float32), full_loader)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, hidden] -> (weights [T, k] fp32, expert ids [T, k])."""
        scores = F.linear(x.float(), self.weight).sigmoid()
        choice = scores + self.e_score_correction_bias
        if self.topk_group < self.n_group:  # otherwise every group is kept and the mask is a no-op
            per_group = self.n_experts // self.n_group
            group_scores = choice.view(-1, self.n_group, per_group).topk(min(2, per_group), dim=-1)[0].sum(dim=-1)
            group_idx = group_scores.topk(self.topk_group, dim=-1, sorted=False)[1]
            group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
            score_mask = group_mask.unsqueeze(-1).expand(-1, self.n_group, per_group).reshape(-1, self.n_experts)
            choice = choice.masked_fill(~score_mask.bool(), float("-inf"))
        idx = choice.topk(self.top_k, dim=-1, sorted=False)[1]
        weights = scores.gather(1, idx)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.scaling, idx


class MoE(nn.Module):
    def __init__(self, cfg: DeepseekV3Config, pctx: ParallelContext) -> None:
        super().__init__()
        self.pctx = pctx
        self.gate = TopkRouter(cfg)
        shard, shards = pctx.expert_tp_rank, pctx.expert_tp_size
        self.local = pctx.local_experts(cfg.n_routed_experts)
        self.experts = nn.ModuleDict(
            {str(e): MLP(cfg.hidden_size, cfg.moe_intermediate_size, shard, shards, pctx, False) for e in self.local}
        )
        self.shared_experts = (
            MLP(
                cfg.hidden_size,
                cfg.moe_intermediate_size * cfg.n_shared_experts,
                pctx.tp_rank,
                pctx.tp_size,
                pctx,
                False,
            )
            if cfg.n_shared_experts
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, idx = self.gate(x)
        routed = self._single_token(x, weights, idx) if x.shape[0] == 1 else self._many_tokens(x, weights, idx)
        if self.shared_experts is None:
            return self.pctx.all_reduce(routed)
        shared = self.shared_experts(x)
        if self.pctx.tp_size > 1:  # both partial over the world: one all-reduce for the sum
            return self.pctx.all_reduce(routed + shared)
        return self.pctx.all_reduce(routed) + shared

    def _single_token(self, x: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One token (single-stream decode): no grouping, just its k experts (saves ~a third of the MoE time)."""
        routed = torch.zeros_like(x)
        for slot, e in enumerate(idx[0].tolist()):
            if e in self.local:
                routed += (self.experts[str(e)](x) * weights[:, slot, None]).to(routed.dtype)
        return routed

    def _many_tokens(self, x: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Group (token, slot) pairs by expert with one stable sort; run each local expert on its contiguous run.

        One index_add_ over the sorted pairs adds each token's contributions in ascending expert order, the
        same order as a loop over experts would.
        """
        k = idx.shape[1]
        flat = idx.flatten()
        order = torch.sort(flat, stable=True)[1]
        counts = torch.bincount(flat, minlength=self.gate.n_experts).tolist()  # one host sync per layer
        lo = sum(counts[: self.local.start])
        hi = lo + sum(counts[self.local.start : self.local.stop])
        routed = torch.zeros_like(x)
        if hi == lo:
            return routed
        order = order[lo:hi]
        token = order // k
        xs = x[token]
        outs, start = [], 0
        for e in self.local:
            if n := counts[e]:
                expert: MLP = self.experts[str(e)]  # type: ignore[assignment]
                outs.append(expert.partial(xs[start : start + n]))  # experts are never reduced on their own
                start += n
        weighted = (torch.cat(outs) * weights.flatten()[order, None]).to(x.dtype)
        return routed.index_add_(0, token, weighted)
