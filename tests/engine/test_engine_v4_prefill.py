"""Batched V4 prefill attention: padded groups give each sequence what attending it alone gives."""

from __future__ import annotations

import torch

from supernode.engine.model.v4_prefill import PADDING_FACTOR, attend_padded, size_groups


def test_padded_batch_equals_each_sequence_alone() -> None:
    gen = torch.Generator().manual_seed(0)
    sizes = [(5, 9), (1, 3), (3, 12)]
    qs = [torch.randn(n, 4, 8, generator=gen) for n, _ in sizes]
    ks = [torch.randn(length, 8, generator=gen) for _, length in sizes]
    masks = [torch.rand(n, length, generator=gen) > 0.3 for n, length in sizes]
    masks[1][:] = False  # a query that sees nothing attends only to the sink: zeros, not NaN
    sink = torch.randn(4, generator=gen)
    together = attend_padded(qs, ks, masks, sink, 0.5)
    for q, k, m, got in zip(qs, ks, masks, together, strict=True):
        alone = attend_padded([q], [k], [m], sink, 0.5)[0]
        assert got.shape == q.shape and torch.allclose(got, alone, atol=1e-6)
    assert torch.equal(together[1], torch.zeros_like(together[1]))


def test_groups_cover_every_sequence_once_and_bound_the_padding() -> None:
    sizes = [(32, 160), (30, 150), (2048, 2600), (1, 129), (32, 161), (1, 130)]
    groups = size_groups(sizes)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    for g in groups:
        padded = len(g) * max(sizes[i][0] for i in g) * max(sizes[i][1] for i in g)
        assert padded <= PADDING_FACTOR * sum(sizes[i][0] * sizes[i][1] for i in g)
    assert [2] in groups  # the long chunk is not padded up with the short ones
    assert any({0, 1, 4} <= set(g) for g in groups)  # similar prompts share a batch
    assert size_groups([]) == []
