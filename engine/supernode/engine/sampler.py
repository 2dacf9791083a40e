"""Token sampling: greedy, temperature, top-k, top-p, per-request seeds.

A request with a seed owns a ``torch.Generator`` seeded once, and draws exactly one sample per step
from it, so its tokens do not depend on what else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from supernode.engine.core.sequence import SamplingParams

_SEED_MASK = (1 << 63) - 1  # any integer seed maps into what torch.Generator accepts


class Sampler:
    """Samples one token per row of a logits batch. Owns per-request generators (drop them with ``forget``)."""

    def __init__(self, seed: int = 0) -> None:
        self._shared = torch.Generator().manual_seed(seed)
        self._generators: dict[int, torch.Generator] = {}

    def forget(self, seq_id: int) -> None:
        self._generators.pop(seq_id, None)

    def _generator(self, seq_id: int, params: SamplingParams) -> torch.Generator:
        if params.seed is None:
            return self._shared
        gen = self._generators.get(seq_id)
        if gen is None:
            gen = self._generators[seq_id] = torch.Generator().manual_seed(params.seed & _SEED_MASK)
        return gen

    def sample(
        self,
        logits: torch.Tensor,
        seq_ids: Sequence[int],
        params: Sequence[SamplingParams],
        outputs: Sequence[Sequence[int]] | None = None,
    ) -> list[int]:
        """``logits``: float [batch, vocab] (any device); ``outputs``: tokens generated so far (for penalties)."""
        logits = logits.detach().to("cpu", torch.float32)
        for row, p in enumerate(params):
            if outputs is not None and (p.presence_penalty or p.frequency_penalty) and outputs[row]:
                logits[row] = apply_penalties(logits[row], outputs[row], p)
        out = logits.argmax(dim=-1).tolist()
        for row, (seq_id, p) in enumerate(zip(seq_ids, params, strict=True)):
            if not p.greedy:
                out[row] = sample_row(logits[row], p, self._generator(seq_id, p))
        return [int(t) for t in out]


def apply_penalties(logits: torch.Tensor, generated: Sequence[int], p: SamplingParams) -> torch.Tensor:
    """OpenAI presence/frequency penalties over the tokens generated so far."""
    counts = torch.bincount(torch.tensor(list(generated)), minlength=logits.numel())[: logits.numel()].float()
    return logits - p.frequency_penalty * counts - p.presence_penalty * (counts > 0).float()


def filter_logits(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) masking on one row of logits."""
    logits = logits / p.temperature
    if 0 < p.top_k < logits.numel():
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens strictly more likely already reach top_p.
        drop = (torch.cumsum(probs, dim=-1) - probs) >= p.top_p
        logits = logits.scatter(0, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


def sample_row(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator) -> int:
    probs = torch.softmax(filter_logits(logits, p), dim=-1)
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
        return int(logits.argmax())  # e.g. a temperature so small that logits overflow: that is greedy
    return int(torch.multinomial(probs, 1, generator=gen).item())
