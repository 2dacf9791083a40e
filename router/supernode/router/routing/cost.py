"""Predicted cost of a request on an endpoint, in prefill tokens (pure functions, no state).

What a client waits for before its first token on an endpoint is roughly: the wait for a free slot,
then the prefill of the prompt tokens the endpoint does not hold. Both are expressed in the time the
engine needs to prefill one token, so they add up:

    cost = uncached prompt tokens
         + request_tokens x (requests that must finish before this one gets a slot) / slots
         + busy_tokens x load / slots

``request_tokens`` is one request's time on a slot (its prefill and its decode) in prefill-token time:
what one queued request ahead is worth. ``busy_tokens`` is a small charge per request already running
(a fuller batch steps more slowly); it also orders endpoints of equal cache by load. ``slots`` is the
endpoint's max concurrency times its capacity weight. A long cached prefix thus wins only while it saves
more prefill than the queue it joins costs: a cache hit never buys a long wait.
"""

from __future__ import annotations

from dataclasses import dataclass

TOKENS_PER_BLOCK_GUESS = 16  # an approximate (64-byte) block, at the router's 4-bytes-per-token estimate


@dataclass(frozen=True, slots=True)
class CostModel:
    request_tokens: float = 8192.0
    busy_tokens: float = 16.0

    def __post_init__(self) -> None:
        if self.request_tokens < 0 or self.busy_tokens < 0:
            raise ValueError("request_tokens and busy_tokens must be >= 0")

    def cost(self, *, uncached_tokens: float, load: float, slots: float) -> float:
        slots = max(slots, 1e-9)
        ahead = load + 1 - slots if load >= slots else 0.0  # no free slot: this one and those queued before it
        wait = self.request_tokens * ahead / slots
        return max(0.0, uncached_tokens) + wait + self.busy_tokens * load / slots


def uncached_tokens(prompt_tokens: int, cached_blocks: int, total_blocks: int) -> float:
    """Prompt tokens past the cached prefix: the prompt's share that the endpoint does not hold (blocks are
    the endpoint's own unit: engine token blocks when precise, text blocks otherwise)."""
    if total_blocks <= 0:
        return float(prompt_tokens)
    return prompt_tokens * (1.0 - min(cached_blocks, total_blocks) / total_blocks)


def cost_scores(costs: list[float]) -> list[float]:
    """Scores in (0, 1]: 1 for the cheapest endpoint, (1 + cheapest) / (1 + cost) for the others (a ratio,
    so the same whatever the prompt's size)."""
    if not costs:
        return []
    low = min(costs)
    return [(1.0 + low) / (1.0 + c) for c in costs]
