"""Batched prefill attention for DeepSeek-V4: the multi-token sequences of a step attend in a few padded batches.

Each sequence brings its own keys (window, new tokens, compressed entries) and mask, built one sequence at a
time (`V4Attention._keys`: the compressors' windows and the indexer's choice depend on its positions); the
attention itself — scores, sinks, softmax, weighted sum — runs once per group of similar sizes, keys and
queries padded and the padding masked. Groups bound the padding: a group's padded area (sequences x
longest query run x longest key run) stays within twice the area its sequences need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

PADDING_FACTOR = 2  # a group may compute at most this many times the score entries its sequences need


def size_groups(sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices of (queries, keys) sizes grouped so that each group's padded area stays within PADDING_FACTOR
    times its real area (pure; similar sizes end up together)."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][1], sizes[i][0]))
    groups: list[list[int]] = []
    group: list[int] = []
    area = n_max = l_max = 0
    for i in order:
        n, length = sizes[i]
        grown = (len(group) + 1) * max(n_max, n) * max(l_max, length)
        if group and grown > PADDING_FACTOR * (area + n * length):
            groups.append(group)
            group, area, n_max, l_max = [], 0, 0, 0
        group.append(i)
        area, n_max, l_max = area + n * length, max(n_max, n), max(l_max, length)
    if group:
        groups.append(group)
    return groups


def attend_padded(
    queries: Sequence[torch.Tensor], keys: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
    sink: torch.Tensor, scale: float,
) -> list[torch.Tensor]:  # fmt: skip
    """Per sequence: queries [n, H, D], keys (= values) [L, D], mask [n, L] -> output [n, H, D].

    A learned per-head sink logit joins each softmax's denominator; padded keys are masked and padded
    query rows are dropped, so each sequence's output equals attending it alone.
    """
    q = pad_sequence(list(queries), batch_first=True)  # [S, N, H, D]
    k = pad_sequence(list(keys), batch_first=True)  # [S, L, D]
    s, n, h, _ = q.shape
    mask = torch.zeros(s, n, k.shape[1], dtype=torch.bool, device=k.device)
    for i, m in enumerate(masks):
        mask[i, : m.shape[0], : m.shape[1]] = m
    scores = torch.einsum("snhd,sld->snhl", q, k) * scale
    scores = scores.masked_fill(~mask[:, :, None, :], float("-inf"))
    sinks = sink.to(scores.dtype).view(1, 1, -1, 1).expand(s, n, h, 1)
    logits = torch.cat([scores, sinks], dim=-1)
    logits = logits - logits.max(dim=-1, keepdim=True).values
    probs = torch.softmax(logits, dim=-1)[..., :-1].to(k.dtype)
    out = torch.einsum("snhl,sld->snhd", probs, k)
    return [out[i, : m.shape[0]] for i, m in enumerate(masks)]
