"""ParallelContext: which shard of the model this rank holds, and the collectives that combine shards.

Layout (see docs/engine-model.md): one world of `world_size` ranks. Attention, dense MLPs, shared
experts, embedding and LM head are tensor-parallel over the whole world when tensor_parallel > 1
(else replicated). Routed experts are expert-parallel over the world when expert_parallel > 1
(contiguous ranges of experts per rank), else tensor-parallel like the dense MLPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True, slots=True)
class ParallelContext:
    """This rank's position in the group; `group` is None for a single process."""

    rank: int = 0
    world_size: int = 1
    tensor_parallel: int = 1
    expert_parallel: int = 1
    group: Any = None

    def __post_init__(self) -> None:
        for size in (self.tensor_parallel, self.expert_parallel):
            if size not in (1, self.world_size):
                raise ValueError(f"parallel sizes must be 1 or world_size={self.world_size}, got {size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world of {self.world_size}")

    @property
    def tp_size(self) -> int:
        return self.tensor_parallel

    @property
    def tp_rank(self) -> int:
        return self.rank if self.tensor_parallel > 1 else 0

    @property
    def ep_size(self) -> int:
        return self.expert_parallel

    @property
    def ep_rank(self) -> int:
        return self.rank if self.expert_parallel > 1 else 0

    @property
    def expert_tp_size(self) -> int:
        """Shards per routed expert: experts are TP-sharded only when not expert-parallel."""
        return self.tensor_parallel if self.expert_parallel == 1 else 1

    @property
    def expert_tp_rank(self) -> int:
        return self.tp_rank if self.expert_parallel == 1 else 0

    def local_experts(self, n_experts: int) -> range:
        """Global ids of the routed experts this rank holds (a contiguous range)."""
        if n_experts % self.ep_size:
            raise ValueError(f"n_routed_experts={n_experts} not divisible by expert_parallel={self.ep_size}")
        per = n_experts // self.ep_size
        return range(self.ep_rank * per, (self.ep_rank + 1) * per)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over the world (in place); identity for one process."""
        if self.world_size > 1:
            dist.all_reduce(t, group=self.group)
        return t

    def all_gather_last(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's `t` along the last dim (used by the vocab-parallel LM head)."""
        if self.world_size == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)


SINGLE = ParallelContext()
