"""Building blocks with per-parameter weight loaders, so each rank reads only its shard.

A weight loader is `loader(param, src)` where `src` is a safetensors slice (or `TensorSlice`):
indexing it reads just that part of the file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from supernode.engine.parallel import ParallelContext


class SliceLike(Protocol):
    def get_shape(self) -> list[int]: ...
    def __getitem__(self, index: Any) -> torch.Tensor: ...


class TensorSlice:
    """Adapts an in-memory tensor to the safetensors slice interface."""

    def __init__(self, t: torch.Tensor) -> None:
        self._t = t

    def get_shape(self) -> list[int]:
        return list(self._t.shape)

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self._t[index]


WeightLoader = Callable[[nn.Parameter, SliceLike], None]


def _check_copy(param: nn.Parameter, loaded: torch.Tensor, name: str = "") -> None:
    if tuple(loaded.shape) != tuple(param.shape):
        raise ValueError(f"weight shape mismatch{name}: checkpoint {tuple(loaded.shape)} vs model {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(loaded.to(param.dtype))


def full_loader(param: nn.Parameter, src: SliceLike) -> None:
    _check_copy(param, src[:])


def shard_loader(dim: int, shard: int, num_shards: int) -> WeightLoader:
    """Loads contiguous shard `shard` of `num_shards` along `dim`."""

    def load(param: nn.Parameter, src: SliceLike) -> None:
        total = src.get_shape()[dim]
        if total % num_shards:
            raise ValueError(f"dimension {dim} of size {total} not divisible into {num_shards} shards")
        size = total // num_shards
        lo, hi = shard * size, (shard + 1) * size
        _check_copy(param, src[lo:hi] if dim == 0 else src[:, lo:hi])

    return load


def set_loader(param: nn.Parameter, loader: WeightLoader) -> nn.Parameter:
    param.weight_loader = loader  # type: ignore[attr-defined]
    return param


def new_param(*shape: int, dtype: torch.dtype | None = None) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = set_loader(new_param(dim), full_loader)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class ReplicatedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = set_loader(new_param(out_features, in_features), full_loader)
        self.bias = set_loader(new_param(out_features), full_loader) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ColumnParallelLinear(nn.Module):
    """Output features split over `shards` ranks (contiguously, so per-head layouts stay whole)."""

    def __init__(self, in_features: int, out_features: int, shard: int, shards: int) -> None:
        super().__init__()
        if out_features % shards:
            raise ValueError(f"out_features={out_features} not divisible by {shards} shards")
        self.weight = set_loader(new_param(out_features // shards, in_features), shard_loader(0, shard, shards))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class RowParallelLinear(nn.Module):
    """Input features split over ranks; `reduce` sums the partial outputs over the world."""

    def __init__(
        self, in_features: int, out_features: int, shard: int, shards: int, pctx: ParallelContext, reduce: bool
    ) -> None:
        super().__init__()
        if in_features % shards:
            raise ValueError(f"in_features={in_features} not divisible by {shards} shards")
        self.weight = set_loader(new_param(out_features, in_features // shards), shard_loader(1, shard, shards))
        self.pctx, self.reduce = pctx, reduce and shards > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight)
        return self.pctx.all_reduce(out) if self.reduce else out


class MLP(nn.Module):
    """SwiGLU MLP: gate/up column-parallel, down row-parallel (reduced here unless `reduce=False`)."""

    def __init__(self, hidden: int, inter: int, shard: int, shards: int, pctx: ParallelContext, reduce: bool) -> None:
        super().__init__()
        self.gate_proj = ColumnParallelLinear(hidden, inter, shard, shards)
        self.up_proj = ColumnParallelLinear(hidden, inter, shard, shards)
        self.down_proj = RowParallelLinear(inter, hidden, shard, shards, pctx, reduce)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def partial(self, x: torch.Tensor) -> torch.Tensor:
        """forward without the all-reduce and without submodule calls (the MoE runs many small experts)."""
        gate, up = F.linear(x, self.gate_proj.weight), F.linear(x, self.up_proj.weight)
        return F.linear(F.silu(gate) * up, self.down_proj.weight)


def _padded_vocab_shard(vocab: int, shards: int) -> int:
    return -(-vocab // shards)


def vocab_shard_loader(vocab: int, lo: int, per: int) -> WeightLoader:
    """Loads vocab rows [lo, lo + per) (zero-padding past the vocab end)."""

    def load(param: nn.Parameter, src: SliceLike) -> None:
        rows = src.get_shape()[0]
        if rows != vocab:
            raise ValueError(f"vocab mismatch: checkpoint {rows} rows vs config vocab_size {vocab}")
        part = src[lo : min(lo + per, rows)]
        with torch.no_grad():
            param.zero_()
            param[: part.shape[0]].copy_(part.to(param.dtype))

    return load


class VocabParallelEmbedding(nn.Module):
    """Embedding rows split over TP ranks; out-of-shard tokens contribute zeros, then all-reduce."""

    def __init__(self, vocab: int, hidden: int, pctx: ParallelContext) -> None:
        super().__init__()
        self.pctx, self.vocab = pctx, vocab
        self.per = _padded_vocab_shard(vocab, pctx.tp_size)
        self.lo = pctx.tp_rank * self.per
        self.weight = set_loader(new_param(self.per, hidden), vocab_shard_loader(vocab, self.lo, self.per))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.pctx.tp_size == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.lo
        inside = (local >= 0) & (local < self.per)
        out = F.embedding(local.clamp(0, self.per - 1), self.weight) * inside.unsqueeze(-1).to(self.weight.dtype)
        return self.pctx.all_reduce(out)


class ParallelLMHead(nn.Module):
    """LM head rows (vocab) split over TP ranks; logits all-gathered. `tie_to` shares the embedding's shard."""

    def __init__(self, vocab: int, hidden: int, pctx: ParallelContext, tie_to: VocabParallelEmbedding | None) -> None:
        super().__init__()
        self.pctx, self.vocab = pctx, vocab
        if tie_to is not None:
            self.weight = tie_to.weight
        else:
            per = _padded_vocab_shard(vocab, pctx.tp_size)
            self.weight = set_loader(new_param(per, hidden), vocab_shard_loader(vocab, pctx.tp_rank * per, per))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.pctx.all_gather_last(F.linear(h, self.weight))
        return logits[..., : self.vocab]
