"""Sharded layers, simulated in one process: each rank's partial result combined by hand equals the whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from supernode.engine.model.layers import (
    ColumnParallelLinear,
    ParallelLMHead,
    RowParallelLinear,
    TensorSlice,
    VocabParallelEmbedding,
)
from supernode.engine.model.paged import build_metadata


@dataclass
class FakeRank:
    """Stands in for ParallelContext: rank `tp_rank` of `tp_size`; collectives return the local partial."""

    tp_rank: int
    tp_size: int = 2

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def all_gather_last(self, t: torch.Tensor) -> torch.Tensor:
        return t


def _load(module: torch.nn.Module, full: torch.Tensor) -> None:
    module.weight.weight_loader(module.weight, TensorSlice(full))  # type: ignore[operator,union-attr]


def test_vocab_parallel_embedding_and_head_with_a_vocab_not_divisible_by_tp() -> None:
    vocab, hidden = 7, 3
    table = torch.randn(vocab, hidden)
    ids = torch.tensor([0, 3, 4, 6])
    embeds, heads = [], []
    for rank in range(2):
        pctx: Any = FakeRank(rank)
        emb = VocabParallelEmbedding(vocab, hidden, pctx)
        _load(emb, table)
        embeds.append(emb(ids))
        head = ParallelLMHead(vocab, hidden, pctx, tie_to=None)
        _load(head, table)
        heads.append(torch.nn.functional.linear(torch.eye(hidden), head.weight))
    torch.testing.assert_close(embeds[0] + embeds[1], table[ids])  # all-reduce of masked lookups
    logits = torch.cat(heads, dim=-1)[:, :vocab]  # all-gather of vocab shards, padding dropped
    torch.testing.assert_close(logits, table.T)


def test_column_then_row_parallel_equals_the_unsharded_product() -> None:
    w1, w2, x = torch.randn(8, 5), torch.randn(5, 8), torch.randn(4, 5)
    partials = []
    for rank in range(2):
        pctx: Any = FakeRank(rank)
        col, row = ColumnParallelLinear(5, 8, rank, 2), RowParallelLinear(8, 5, rank, 2, pctx, reduce=True)
        _load(col, w1)
        _load(row, w2)
        partials.append(row(col(x)))
    torch.testing.assert_close(partials[0] + partials[1], x @ w1.T @ w2.T)


def test_paged_metadata_slots_positions_and_masks() -> None:
    # seq A: 3 cached + 2 new in blocks [5, 2] (block size 2); seq B: decode at position 0 in block [7]
    meta, positions = build_metadata([2, 1, 1], [3, 0, 4], [[5, 2, 9], [7], [1, 0, 3]], 2, torch.device("cpu"))
    assert positions.tolist() == [3, 4, 0, 4]
    assert meta.slot_mapping.tolist() == [2 * 2 + 1, 9 * 2 + 0, 7 * 2 + 0, 3 * 2 + 0]
    decodes, prefill = meta.groups
    assert decodes.q_rows.tolist() == [[2], [3]]
    assert decodes.mask[0, 0, 0].tolist() == [True, False, False, False, False]
    assert decodes.mask[1, 0, 0].tolist() == [True] * 5
    assert decodes.ctx_slots[1].tolist() == [2, 3, 0, 1, 6]
    assert prefill.mask[0, 0].tolist() == [[True] * 4 + [False], [True] * 5]
    assert prefill.ctx_slots[0].tolist() == [10, 11, 4, 5, 18]
