"""Batched decode for DeepSeek-V4 attention: every one-token sequence of a step in one set of tensor ops.

Same arithmetic as the per-sequence path (`V4Attention._one`), laid out for a batch: the sliding window is
the whole ring (after writing the new token, ring slot j holds position p - ((p - j) mod window)); the
compressed entries are gathered padded to the longest sequence and masked; windows that close on this
token are pooled together from the compressors' carry rings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from supernode.engine.model.v4_cache import LayerCache, StepSeq
from supernode.engine.model.v4_layers import Rope, rope_tail

if TYPE_CHECKING:
    from supernode.engine.model.v4_attention import Compressor, Indexer, V4Attention

CosSin = tuple[torch.Tensor, torch.Tensor]


def close_windows(
    comp: Compressor, x: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor, seqs: Sequence[StepSeq],
    pool: torch.Tensor, carry: tuple[torch.Tensor, torch.Tensor], cache: LayerCache, rope: Rope,
) -> None:  # fmt: skip
    """Record each sequence's projections in its carry ring; pool the windows this token completes."""
    kv_ring, gate_ring = carry
    span, m = kv_ring.shape[1], comp.m
    kv_ring[slots, pos % span] = comp.wkv(x).to(kv_ring.dtype)
    gate_ring[slots, pos % span] = comp.wgate(x).to(gate_ring.dtype)
    closing = ((pos + 1) % m == 0).nonzero().flatten()
    if closing.numel() == 0:
        return
    w = (pos[closing] + 1) // m - 1  # the window each closing sequence completes
    first = (w - 1) * m if comp.overlap else w * m
    p = first[:, None] + torch.arange(2 * m if comp.overlap else m, device=x.device)[None, :]
    rows = slots[closing][:, None]
    kv, gate = kv_ring[rows, p % span], gate_ring[rows, p % span].float()
    ape = comp.ape.repeat(2, 1) if comp.overlap else comp.ape
    gate = gate + ape
    if comp.overlap:
        d = comp.dim
        kv = torch.cat([kv[:, :m, :d], kv[:, m:, d:]], dim=1)
        gate = torch.cat([gate[:, :m, :d], gate[:, m:, d:]], dim=1)
        missing = (p < 0)[:, :, None]  # window 0 has no predecessor: zero weight
        kv = kv.masked_fill(missing, 0.0)
        gate = gate.masked_fill(missing, float("-inf"))
    entries = comp.norm((kv * gate.softmax(dim=1).to(kv.dtype)).sum(dim=1))
    cos, sin = rope.cos_sin(w * m, entries.dtype)
    entries = rope_tail(entries, cos, sin)
    tables = pad_sequence([seqs[i].table for i in closing.tolist()], batch_first=True)
    targets = cache.entry_row_each(tables, w)
    pool.index_copy_(0, targets, entries.to(pool.dtype))


def entry_rows(cache: LayerCache, seqs: Sequence[StepSeq], counts: list[int], device: torch.device) -> torch.Tensor:
    """[B, max count] pool rows of each sequence's entries (padding repeats row 0, masked by the caller)."""
    tables = pad_sequence([s.table for s in seqs], batch_first=True)
    return cache.entry_rows(tables, torch.arange(max(counts), device=device))


def select_batch(
    indexer: Indexer, x: torch.Tensor, q_res: torch.Tensor, cos_sin: CosSin, keys: torch.Tensor, visible: torch.Tensor
) -> torch.Tensor:
    """Indexer top-k for one query per sequence: keys [B, E, dim], visible [B, E] -> chosen [B, E]."""
    b, e = visible.shape
    q = rope_tail(indexer.wq_b(q_res).view(b, indexer.heads, indexer.dim), *cos_sin)
    scores = F.relu(torch.einsum("bhd,bed->bhe", q.float(), keys.float())) * indexer.dim**-0.5
    weights = indexer.weights_proj(x).float() * indexer.heads**-0.5
    total = (scores * weights.unsqueeze(-1)).sum(dim=1).masked_fill(~visible, float("-inf"))
    top = torch.sort(total, dim=-1, descending=True, stable=True).indices[:, : min(indexer.topk, e)]
    chosen = torch.zeros_like(visible)
    chosen.scatter_(1, top, True)
    return chosen & visible


def decode_batch(
    attn: V4Attention, x: torch.Tensor, q_res: torch.Tensor, q: torch.Tensor, kv: torch.Tensor,
    cos_sin: CosSin, seqs: Sequence[StepSeq], cache: LayerCache, rope: Rope,
) -> torch.Tensor:  # fmt: skip
    """x, q_res, q, kv, cos/sin: one row per sequence (its single new token) -> attention output [B, H, D]."""
    device = x.device
    pos = torch.tensor([s.start for s in seqs], device=device)
    slots = torch.tensor([s.slot for s in seqs], device=device)
    window = cache.ring.shape[1]
    cache.ring[slots, pos % window] = kv.to(cache.ring.dtype)
    ring = cache.ring.index_select(0, slots).to(kv.dtype)  # [B, W, D]
    ring_pos = pos[:, None] - (pos[:, None] - torch.arange(window, device=device)[None, :]) % window
    masks = [ring_pos >= 0]
    scores = [torch.einsum("bhd,bld->bhl", q, ring)]
    entries: torch.Tensor | None = None
    if attn.compressor is not None:
        assert cache.pool is not None
        close_windows(attn.compressor, x, pos, slots, seqs, cache.pool, cache.carry["kv"], cache, rope)
        counts = [(s.start + 1) // attn.m for s in seqs]
        if attn.indexer is not None:
            assert cache.index_pool is not None
            close_windows(attn.indexer.compressor, x, pos, slots, seqs, cache.index_pool, cache.carry["index"],
                          cache, rope)  # fmt: skip
        if max(counts):
            rows = entry_rows(cache, seqs, counts, device)
            visible = torch.arange(rows.shape[1], device=device)[None, :] < torch.tensor(counts, device=device)[:, None]
            entries = cache.pool[rows].to(kv.dtype)
            if attn.indexer is not None:
                assert cache.index_pool is not None
                visible = select_batch(attn.indexer, x, q_res, cos_sin, cache.index_pool[rows], visible)
            scores.append(torch.einsum("bhd,bed->bhe", q, entries))
            masks.append(visible)
    # Scores of the window and of the entries side by side (not one concatenated key tensor: that is a copy
    # of every sequence's whole window per layer and step).
    mask = torch.cat(masks, dim=1)
    logits = torch.cat([*scores, attn.attn_sink.to(q.dtype).view(1, -1, 1).expand(len(seqs), -1, 1)], dim=-1)
    logits[..., :-1] = (logits[..., :-1] * attn.scale).masked_fill(~mask[:, None, :], float("-inf"))
    logits = logits - logits.max(dim=-1, keepdim=True).values
    probs = torch.softmax(logits, dim=-1).to(ring.dtype)
    out = torch.einsum("bhl,bld->bhd", probs[..., :window], ring)
    if entries is not None:
        out = out + torch.einsum("bhl,bld->bhd", probs[..., window:-1], entries)
    return out
