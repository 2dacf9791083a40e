"""Paged-KV bookkeeping for one step: where new tokens' cache entries go and which entries each query sees.

Sequences are flattened into one token stream. Decode sequences (one new token each) are attended as one
padded group; each prefill chunk is its own group, so a long chunk never pads thirty decodes to its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class AttentionGroup:
    q_rows: torch.Tensor  # [B, Q] long: rows of the flat token stream (padding rows repeat a valid row)
    q_valid: torch.Tensor  # [B, Q] bool
    ctx_slots: torch.Tensor  # [B, L] long: flat KV-cache slots of each sequence's context (padding -> 0)
    mask: torch.Tensor  # [B, 1, Q, L] bool: query may attend to that slot (causal and in range)


@dataclass(frozen=True, slots=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] long: cache slot each new token is written to
    groups: tuple[AttentionGroup, ...]


def _group(
    members: Sequence[tuple[int, int, int, Sequence[int]]], block_size: int, device: torch.device
) -> AttentionGroup:
    """members: (first flat row, num new tokens, start_pos, block_table)."""
    q_len = max(n for _, n, _, _ in members)
    ctx_len = max(start + n for _, n, start, _ in members)
    num_blocks = -(-ctx_len // block_size)
    # Tables padded to a common width; a row only reads blocks below its own length, so padding is never used.
    tables = torch.tensor([list(t[:num_blocks]) + [0] * (num_blocks - len(t[:num_blocks])) for *_, t in members])
    rows, lens, starts = torch.tensor([(r, n, s) for r, n, s, _ in members], dtype=torch.long).unbind(1)
    totals = starts + lens
    offsets = torch.arange(ctx_len)
    q_idx = torch.arange(q_len)
    pos = torch.minimum(offsets[None, :], totals[:, None] - 1)  # [B, L]
    slots = tables.gather(1, pos // block_size) * block_size + pos % block_size
    q_pos = starts[:, None] + q_idx[None, :]  # [B, Q]
    mask = (offsets[None, None, :] <= q_pos[:, :, None]) & (offsets[None, None, :] < totals[:, None, None])
    return AttentionGroup(
        q_rows=(rows[:, None] + torch.minimum(q_idx[None, :], lens[:, None] - 1)).to(device),
        q_valid=(q_idx[None, :] < lens[:, None]).to(device),
        ctx_slots=slots.to(device),
        mask=mask[:, None].to(device),
    )


def build_metadata(
    lengths: Sequence[int],
    starts: Sequence[int],
    tables: Sequence[Sequence[int]],
    block_size: int,
    device: torch.device,
) -> tuple[AttentionMetadata, torch.Tensor]:
    """Metadata and the flat positions [T] for sequences with `lengths` new tokens after `starts` cached ones."""
    positions: list[int] = []
    slots: list[int] = []
    decodes: list[tuple[int, int, int, Sequence[int]]] = []
    prefills: list[tuple[int, int, int, Sequence[int]]] = []
    row = 0
    for n, start, table in zip(lengths, starts, tables, strict=True):
        needed = -(-(start + n) // block_size)
        if len(table) < needed:
            raise ValueError(f"block table has {len(table)} blocks, {needed} needed for {start + n} tokens")
        for p in range(start, start + n):
            positions.append(p)
            slots.append(table[p // block_size] * block_size + p % block_size)
        member = (row, n, start, table)
        (decodes if n == 1 else prefills).append(member)
        row += n
    groups = ([_group(decodes, block_size, device)] if decodes else []) + [
        _group([m], block_size, device) for m in prefills
    ]
    meta = AttentionMetadata(slot_mapping=torch.tensor(slots, dtype=torch.long).to(device), groups=tuple(groups))
    return meta, torch.tensor(positions, dtype=torch.long).to(device)
