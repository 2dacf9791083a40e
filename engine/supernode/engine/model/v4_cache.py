"""DeepSeek-V4 KV cache: what each layer keeps, and the per-step view of the batch.

Per layer:
- a sliding-window ring per state slot: the last `sliding_window` tokens' shared K=V vectors (position
  p lives at p % window), so the window costs the same at 4k or 1M tokens;
- CSA / HCA layers: a paged pool of compressed entries, `entries_per_block` per KV block (the block
  holding a window's last token holds its entry) — shared through the prefix cache like V3's latents;
  CSA layers have a second pool for the lightning indexer's compressed keys;
- per state slot, each compressor's carry-over: the raw projections (and gates) of the last 2m (CSA,
  for the overlapping windows) or m (HCA) tokens, enough to close the window in progress.

A state slot belongs to one running sequence (the block manager hands them out); snapshot slots hold
a copy of a sequence's state at a compression boundary so a prefix-cache hit can resume from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from supernode.engine.config import ConfigError
from supernode.engine.model.v4_config import CSA, SLIDING, DeepseekV4Config


@dataclass(frozen=True, slots=True)
class StepSeq:
    """One sequence's part of a step."""

    lo: int  # first row in the flat token stream
    n: int  # new tokens
    start: int  # tokens before them (first new position)
    table: torch.Tensor  # KV block ids (long, on the model's device)
    slot: int  # state slot
    saves: tuple[tuple[int, int], ...]  # (snapshot slot, position): copy the state as of each position


class LayerCache:
    """Tensors of one layer (see the module docstring)."""

    def __init__(
        self, cfg: DeepseekV4Config, layer: int, blocks: int, block_size: int, slots: int, dtype: torch.dtype
    ) -> None:
        self.window = cfg.sliding_window
        self.ring = torch.zeros(slots, self.window, cfg.head_dim, dtype=dtype)
        self.kind = cfg.layer_types[layer]
        self.m = cfg.ratio(layer)
        self.block_size = block_size
        self.pool: torch.Tensor | None = None
        self.index_pool: torch.Tensor | None = None
        self.carry: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.kind == SLIDING:
            return
        m = self.m
        if block_size % m and m % block_size:
            raise ConfigError(
                f"block_size: {block_size} and the compression window {m} ({self.kind}) must divide one another"
            )
        self.per_block = max(1, block_size // m)
        self.pool = torch.zeros(blocks * self.per_block, cfg.head_dim, dtype=dtype)
        csa = self.kind == CSA
        span = 2 * m if csa else m
        width = 2 * cfg.head_dim if csa else cfg.head_dim
        self.carry["kv"] = (torch.zeros(slots, span, width, dtype=dtype), torch.zeros(slots, span, width, dtype=dtype))
        if csa:
            self.index_pool = torch.zeros(blocks * self.per_block, cfg.index_head_dim, dtype=dtype)
            iw = 2 * cfg.index_head_dim
            self.carry["index"] = (torch.zeros(slots, span, iw, dtype=dtype), torch.zeros(slots, span, iw, dtype=dtype))

    def to(self, device: torch.device) -> LayerCache:
        self.ring = self.ring.to(device)
        if self.pool is not None:
            self.pool = self.pool.to(device)
        if self.index_pool is not None:
            self.index_pool = self.index_pool.to(device)
        self.carry = {k: (a.to(device), b.to(device)) for k, (a, b) in self.carry.items()}
        return self

    def entry_slots(self, table: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """Pool rows of compressed entries [first, first + count) of a sequence with block table `table`."""
        return self.entry_rows(table, torch.arange(first, first + count, device=table.device))

    def entry_rows(self, tables: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Pool rows of entries `w` for block tables [..., blocks] (an index past a table reads its last block)."""
        m, bs = self.m, self.block_size
        blocks = tables[..., (((w + 1) * m - 1) // bs).clamp(max=tables.shape[-1] - 1)]
        return blocks * self.per_block + ((w * m) % bs) // m if m <= bs else blocks

    def entry_row_each(self, tables: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Pool row of entry w[i] of the sequence with block table tables[i] (tables [B, blocks], w [B])."""
        m, bs = self.m, self.block_size
        blocks = tables.gather(1, (((w + 1) * m - 1) // bs)[:, None]).flatten()
        return blocks * self.per_block + ((w * m) % bs) // m if m <= bs else blocks

    def copy_state(self, src: int, dst: int) -> None:
        self.ring[dst].copy_(self.ring[src])
        for kv, gate in self.carry.values():
            kv[dst].copy_(kv[src])
            gate[dst].copy_(gate[src])

    def state_bytes_per_slot(self) -> int:
        tensors = [self.ring] + [t for pair in self.carry.values() for t in pair]
        return sum(t[0].numel() * t.element_size() for t in tensors)


def write_ring(ring: torch.Tensor, slot: int, start: int, values: torch.Tensor, end: int | None = None) -> None:
    """Store values [n, ...] for positions start.. into ring[slot] at p % span (only positions < end)."""
    span = ring.shape[1]
    n = values.shape[0] if end is None else min(values.shape[0], end - start)
    if n <= 0:
        return
    keep = min(n, span)
    pos = torch.arange(start + n - keep, start + n, device=ring.device)
    ring[slot].index_copy_(0, pos % span, values[n - keep : n].to(ring.dtype))


def read_ring(ring: torch.Tensor, slot: int, lo: int, hi: int) -> torch.Tensor:
    """Values of positions [lo, hi) (all within the last `span` positions written)."""
    span = ring.shape[1]
    pos = torch.arange(lo, hi, device=ring.device)
    return ring[slot].index_select(0, pos % span)


def layer_caches(
    cfg: DeepseekV4Config, blocks: int, block_size: int, slots: int, dtype: torch.dtype, device: torch.device
) -> list[LayerCache]:
    return [LayerCache(cfg, i, blocks, block_size, slots, dtype).to(device) for i in range(cfg.num_hidden_layers)]


def compressed_bytes_per_block(cfg: DeepseekV4Config, block_size: int, elem: int) -> int:
    total = 0
    for i, kind in enumerate(cfg.layer_types):
        if kind == SLIDING:
            continue
        per_block = max(1, block_size // cfg.ratio(i))
        total += per_block * (cfg.head_dim + (cfg.index_head_dim if kind == CSA else 0)) * elem
    return total


def state_bytes_per_slot(cfg: DeepseekV4Config, elem: int) -> int:
    """One state slot: every layer's ring plus its compressors' carry-over (kv and gate)."""
    total = 0
    for i, kind in enumerate(cfg.layer_types):
        total += cfg.sliding_window * cfg.head_dim
        if kind == CSA:
            total += 2 * (2 * cfg.ratio(i)) * (2 * cfg.head_dim + 2 * cfg.index_head_dim)
        elif kind != SLIDING:
            total += 2 * cfg.ratio(i) * cfg.head_dim
    return total * elem
