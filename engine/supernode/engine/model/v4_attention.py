"""DeepSeek-V4 attention: shared-KV MQA over a sliding window plus compressed entries (CSA / HCA).

- Sliding window: each query sees the last `sliding_window` tokens (itself included), read from the
  sequence's ring and from this step's new tokens.
- Compressors pool each window of m tokens into one entry: a per-channel softmax over the window of
  gate + position bias weights the projected values; the pooled vector is RMS-normed and roped at the
  window's first position. CSA windows overlap: entry w pools window w's second-half channels with
  window w-1's first-half channels (2m slots). A query at position p sees entries with (w+1)*m <= p+1.
- CSA adds the lightning indexer: its own compressor (at index_head_dim) and queries score every visible
  entry with sum_h w_h * relu(q_h . k); the query attends only to its top `index_topk` entries.
- Attention sinks: a learned per-head logit in the softmax denominator. Values equal keys, so the
  output's rope channels are rotated back by the query position before the grouped low-rank output
  projection (o_groups groups of heads, each projected to o_lora_rank, then mixed to hidden).
Attention weights are replicated across tensor-parallel ranks (one KV head cannot be split).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from supernode.engine.model.layers import ReplicatedLinear, full_loader, new_param, set_loader
from supernode.engine.model.v4_cache import LayerCache, StepSeq, read_ring, write_ring
from supernode.engine.model.v4_config import CSA, SLIDING, DeepseekV4Config
from supernode.engine.model.v4_decode import decode_batch
from supernode.engine.model.v4_layers import Rope, V4RMSNorm, rms_unweighted, rope_tail
from supernode.engine.model.v4_prefill import attend_padded, size_groups

CosSin = tuple[torch.Tensor, torch.Tensor]
Pair = tuple[torch.Tensor, torch.Tensor]


class Compressor(nn.Module):
    """Pools windows of m tokens into entries of width `dim` (overlapping windows when `overlap`)."""

    def __init__(self, cfg: DeepseekV4Config, m: int, dim: int, overlap: bool) -> None:
        super().__init__()
        width = 2 * dim if overlap else dim
        self.m, self.dim, self.overlap = m, dim, overlap
        self.wkv = ReplicatedLinear(cfg.hidden_size, width)
        self.wgate = ReplicatedLinear(cfg.hidden_size, width)
        self.ape = set_loader(new_param(m, width, dtype=torch.float32), full_loader)
        self.norm = V4RMSNorm(dim, cfg.rms_norm_eps)

    def project(self, x: torch.Tensor) -> Pair:
        return self.wkv(x), self.wgate(x)

    def step(
        self, projected: Pair, s: StepSeq, pool: torch.Tensor, carry: Pair, cache: LayerCache, rope: Rope,
    ) -> None:  # fmt: skip
        """From one sequence's projected new tokens (`project`): close the windows they complete (into `pool`),
        keep the carry-over."""
        kv_ring, gate_ring = carry
        kv_new, gate_new = projected
        m, end = self.m, s.start + s.n
        w_lo, w_hi = s.start // m, end // m
        if w_hi > w_lo:
            first = max(w_lo - 1, 0) if self.overlap else w_lo
            base = first * m
            kv = torch.cat([read_ring(kv_ring, s.slot, base, s.start), kv_new[: w_hi * m - s.start]])
            gate = torch.cat([read_ring(gate_ring, s.slot, base, s.start), gate_new[: w_hi * m - s.start]])
            windows = w_hi - first
            kv = kv.view(windows, m, -1)
            gate = gate.view(windows, m, -1).float() + self.ape
            if self.overlap:
                cur_kv, cur_gate = kv[w_lo - first :, :, self.dim :], gate[w_lo - first :, :, self.dim :]
                prev_kv, prev_gate = kv[: w_hi - w_lo, :, : self.dim], gate[: w_hi - w_lo, :, : self.dim]
                if w_lo == 0:  # window 0 has no predecessor: its slots get zero weight
                    prev_kv = torch.cat([torch.zeros_like(cur_kv[:1]), kv[: w_hi - 1, :, : self.dim]])
                    prev_gate = torch.cat(
                        [torch.full_like(cur_gate[:1], float("-inf")), gate[: w_hi - 1, :, : self.dim]]
                    )
                kv, gate = torch.cat([prev_kv, cur_kv], dim=1), torch.cat([prev_gate, cur_gate], dim=1)
            pooled = (kv * gate.softmax(dim=1).to(kv.dtype)).sum(dim=1)
            entries = self.norm(pooled)
            positions = torch.arange(w_lo, w_hi, device=kv_new.device) * m
            cos, sin = rope.cos_sin(positions, entries.dtype)
            entries = rope_tail(entries, cos, sin)
            pool.index_copy_(0, cache.entry_slots(s.table, w_lo, w_hi - w_lo), entries.to(pool.dtype))
        for snap, pos in s.saves:
            write_ring(kv_ring, snap, s.start, kv_new, pos)
            write_ring(gate_ring, snap, s.start, gate_new, pos)
        write_ring(kv_ring, s.slot, s.start, kv_new)
        write_ring(gate_ring, s.slot, s.start, gate_new)


class Indexer(nn.Module):
    """Lightning indexer: picks each query's top `index_topk` visible compressed entries."""

    def __init__(self, cfg: DeepseekV4Config, m: int) -> None:
        super().__init__()
        self.heads, self.dim, self.topk, self.m = cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk, m
        self.compressor = Compressor(cfg, m, cfg.index_head_dim, overlap=True)
        self.wq_b = ReplicatedLinear(cfg.q_lora_rank, cfg.index_n_heads * cfg.index_head_dim)
        self.weights_proj = ReplicatedLinear(cfg.hidden_size, cfg.index_n_heads)

    def project(self, x: torch.Tensor, q_res: torch.Tensor) -> Pair:
        """Query and head-weight projections of tokens (`select` takes one sequence's rows of them)."""
        return self.wq_b(q_res), self.weights_proj(x)

    def select(self, projected: Pair, cos_sin: CosSin, keys: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """projected (`project`), cos/sin: one sequence's new rows; keys [E, dim]; visible [n, E] -> chosen [n, E]."""
        n, e = visible.shape
        if e == 0:
            return visible
        q = rope_tail(projected[0].view(n, self.heads, self.dim), *cos_sin)
        scores = F.relu(torch.einsum("nhd,ed->nhe", q.float(), keys.float())) * self.dim**-0.5
        weights = projected[1].float() * self.heads**-0.5
        total = (scores * weights.unsqueeze(-1)).sum(dim=1).masked_fill(~visible, float("-inf"))
        # A stable sort breaks ties (e.g. all heads' relu at zero) by entry index, so the choice does not
        # depend on how many entries exist yet: chunked, cached and cold runs select alike.
        top = torch.sort(total, dim=-1, descending=True, stable=True).indices[:, : min(self.topk, e)]
        chosen = torch.zeros_like(visible)
        chosen.scatter_(1, top, True)
        return chosen & visible


class V4Attention(nn.Module):
    def __init__(self, cfg: DeepseekV4Config, layer: int) -> None:
        super().__init__()
        self.kind = cfg.layer_types[layer]
        self.m = cfg.ratio(layer)
        self.heads, self.head_dim, self.window = cfg.num_attention_heads, cfg.head_dim, cfg.sliding_window
        self.groups, self.eps = cfg.o_groups, cfg.rms_norm_eps
        self.scale = cfg.head_dim**-0.5
        self.wq_a = ReplicatedLinear(cfg.hidden_size, cfg.q_lora_rank)
        self.q_norm = V4RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
        self.wq_b = ReplicatedLinear(cfg.q_lora_rank, cfg.num_attention_heads * cfg.head_dim)
        self.wkv = ReplicatedLinear(cfg.hidden_size, cfg.head_dim)
        self.norm = V4RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        per_group = cfg.num_attention_heads * cfg.head_dim // cfg.o_groups
        self.wo_a = ReplicatedLinear(per_group, cfg.o_groups * cfg.o_lora_rank)
        self.wo_b = ReplicatedLinear(cfg.o_groups * cfg.o_lora_rank, cfg.hidden_size)
        self.attn_sink = set_loader(new_param(cfg.num_attention_heads, dtype=torch.float32), full_loader)
        self.compressor: Compressor | None = None
        self.indexer: Indexer | None = None
        if self.kind != SLIDING:
            self.compressor = Compressor(cfg, self.m, cfg.head_dim, overlap=self.kind == CSA)
        if self.kind == CSA:
            self.indexer = Indexer(cfg, self.m)

    def forward(
        self, x: torch.Tensor, cos_sin: CosSin, seqs: Sequence[StepSeq], cache: LayerCache, rope: Rope
    ) -> torch.Tensor:
        t = x.shape[0]
        q_res = self.q_norm(self.wq_a(x))
        q = rms_unweighted(self.wq_b(q_res).view(t, self.heads, self.head_dim), self.eps)
        q = rope_tail(q, *cos_sin)
        kv = rope_tail(self.norm(self.wkv(x)), *cos_sin)
        out = torch.empty_like(q)
        decodes = [s for s in seqs if s.n == 1 and not s.saves]
        if len(decodes) < 2:  # a lone decode goes with the prefills
            decodes = []
        if decodes:
            rows_d = torch.tensor([s.lo for s in decodes], device=x.device)
            cs = (cos_sin[0][rows_d], cos_sin[1][rows_d])
            out[rows_d] = decode_batch(self, x[rows_d], q_res[rows_d], q[rows_d], kv[rows_d], cs, decodes, cache, rope)
        rest = [s for s in seqs if not (decodes and s.n == 1 and not s.saves)]
        # the compressors' and the indexer's projections of every token at once (not one sequence at a time)
        projected = self._project(x, q_res) if rest else {}
        keys, masks = [], []
        for s in rest:
            rows = slice(s.lo, s.lo + s.n)
            for snap, _ in s.saves:
                cache.copy_state(s.slot, snap)
            mine = {name: (a[rows], b[rows]) for name, (a, b) in projected.items()}
            k, m = self._keys(kv[rows], mine, (cos_sin[0][rows], cos_sin[1][rows]), s, cache, rope)
            keys.append(k)
            masks.append(m)
        for group in size_groups([(s.n, k.shape[0]) for s, k in zip(rest, keys, strict=True)]):
            got = attend_padded([q[rest[i].lo : rest[i].lo + rest[i].n] for i in group], [keys[i] for i in group],
                                [masks[i] for i in group], self.attn_sink, self.scale)  # fmt: skip
            for i, o in zip(group, got, strict=True):
                out[rest[i].lo : rest[i].lo + rest[i].n] = o
        out = rope_tail(out, cos_sin[0], -cos_sin[1])
        grouped = out.reshape(t, self.groups, -1)
        w = self.wo_a.weight.view(self.groups, -1, grouped.shape[-1])
        mixed = torch.einsum("tgi,goi->tgo", grouped, w).reshape(t, -1)
        return self.wo_b(mixed)

    def _project(self, x: torch.Tensor, q_res: torch.Tensor) -> dict[str, Pair]:
        out = {}
        if self.compressor is not None:
            out["kv"] = self.compressor.project(x)
        if self.indexer is not None:
            out["index"], out["query"] = self.indexer.compressor.project(x), self.indexer.project(x, q_res)
        return out

    def _keys(
        self, kv: torch.Tensor, projected: dict[str, Pair], cos_sin: CosSin, s: StepSeq, cache: LayerCache,
        rope: Rope,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """One sequence's keys [L, D] (its window, new tokens, compressed entries) and mask [n, L]; closes the
        windows its tokens complete and records them in its state (and its snapshots)."""
        device = kv.device
        lo = max(0, s.start - self.window + 1)
        keys = torch.cat([read_ring(cache.ring, s.slot, lo, s.start), kv])
        kpos = torch.arange(lo, s.start + s.n, device=device)
        qpos = torch.arange(s.start, s.start + s.n, device=device)
        mask = (kpos[None, :] <= qpos[:, None]) & (kpos[None, :] > qpos[:, None] - self.window)
        if self.compressor is not None:
            assert cache.pool is not None
            self.compressor.step(projected["kv"], s, cache.pool, cache.carry["kv"], cache, rope)
            count = (s.start + s.n) // self.m
            slots = cache.entry_slots(s.table, 0, count)
            entries = cache.pool.index_select(0, slots).to(keys.dtype)
            visible = torch.arange(count, device=device)[None, :] < ((qpos + 1) // self.m)[:, None]
            if self.indexer is not None:
                assert cache.index_pool is not None
                self.indexer.compressor.step(projected["index"], s, cache.index_pool, cache.carry["index"], cache, rope)
                index_keys = cache.index_pool.index_select(0, slots)
                visible = self.indexer.select(projected["query"], cos_sin, index_keys, visible)
            keys = torch.cat([keys, entries])
            mask = torch.cat([mask, visible], dim=1)
        for snap, pos in s.saves:
            write_ring(cache.ring, snap, s.start, kv, pos)
        write_ring(cache.ring, s.slot, s.start, kv)
        return keys, mask
