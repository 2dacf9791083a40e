"""Log-probabilities reported to clients: of generated tokens and, for scoring requests, of the prompt's."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from supernode.engine.core.sequence import Sequence


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A token's log-probability under the model's distribution, with the ``top`` alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    reasoning: bool = False  # the token belongs to the reasoning (chat reports content tokens only)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax of raw logits rows (before temperature, penalties and top-k/top-p), on the CPU in float32."""
    return torch.log_softmax(logits.detach().to("cpu", torch.float32), dim=-1)


def token_logprob(row: torch.Tensor, token_id: int, k: int, reasoning: bool = False) -> TokenLogprob:
    top: tuple[tuple[int, float], ...] = ()
    if k > 0:
        values, ids = torch.topk(row, min(k, row.numel()))
        top = tuple((int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token_id, float(row[token_id]), top, reasoning)


def prompt_logprobs(seq: Sequence, start_pos: int, logits: torch.Tensor) -> list[TokenLogprob]:
    """The prompt tokens' log-probabilities a prefill chunk's rows give (row i predicts token start_pos + i + 1).

    Advances ``seq.num_prompt_logprobs``, so a chunk recomputed after a preemption reports nothing twice.
    """
    k = seq.params.prompt_logprobs
    if k is None:
        return []
    out = []
    for offset, row in enumerate(log_probs(logits)):
        target = start_pos + offset + 1
        if target == seq.num_prompt_logprobs + 1 and target < seq.num_prompt_tokens:
            out.append(token_logprob(row, seq.token_ids[target], k))
            seq.num_prompt_logprobs = target
    return out
