"""What the engine loop exchanges with its callers and its runner (kept apart from the loop itself)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from supernode.engine.chat import Delta, OutputText
from supernode.engine.config import EngineConfig, default
from supernode.engine.core.scheduler import SchedulerConfig
from supernode.engine.core.sequence import Sequence
from supernode.engine.logprobs import TokenLogprob


class Runner(Protocol):
    """What the engine needs from a model runner (``supernode.engine.runner.ModelRunner``)."""

    num_kv_blocks: int
    block_size: int

    def run(self, batch: list[Any]) -> torch.Tensor:
        """Logits rows: one per item (its last token), or one per token of an item with ``all_logits``."""
        ...


@dataclass(frozen=True, slots=True)
class SeqInput:
    """One sequence's work in one step (what the engine loop hands the runner)."""

    token_ids: list[int]  # tokens to compute now (a prefill chunk, or the one decode token)
    start_pos: int  # tokens of this sequence already in the KV cache (positions start here)
    block_table: list[int]  # physical KV block ids covering positions [0, start_pos + len(token_ids))
    # Models with per-sequence state (DeepSeek-V4): the sequence's state slot; a snapshot slot to resume
    # from before computing (a prefix-cache hit); (snapshot slot, position) pairs to copy the state into.
    slot: int = -1
    restore: int = -1
    saves: tuple[tuple[int, int], ...] = ()
    all_logits: bool = False  # logits for every token computed now (prompt log-probabilities), not just the last


class EngineOverloaded(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("the engine's queue is full; retry later")
        self.retry_after = retry_after


class EngineDead(Exception):
    """The engine loop stopped (a runner failure); the process should exit."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The engine loop's limits. Defaults are EngineConfig's (``from_config`` derives them from one)."""

    model_name: str
    max_model_len: int  # the effective context: min(the model's or configured limit, the KV cache's size)
    max_num_seqs: int = default("max_num_seqs")
    max_num_batched_tokens: int = default("max_num_batched_tokens")
    max_waiting: int = default("max_waiting")  # requests queued beyond the running batch; more → EngineOverloaded
    seed: int = default("seed")
    kv_events_log: int = default("kv_events_log")  # numbered KV events kept for subscribers that resume

    @classmethod
    def from_config(cls, config: EngineConfig, model_name: str, max_model_len: int) -> EngineOptions:
        return cls(
            model_name,
            max_model_len,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_waiting=config.max_waiting,
            seed=config.seed,
            kv_events_log=config.kv_events_log,
        )

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(self.max_num_seqs, self.max_num_batched_tokens, self.max_model_len)


@dataclass(slots=True)
class Output:
    """One update of a request: text delta, new token ids, and (when finished) the final accounting."""

    delta: Delta
    token_ids: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per token of token_ids, when asked for
    prompt_logprobs: list[TokenLogprob] | None = None  # prompt tokens 1.. (sent with the first token)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    error: str | None = None


@dataclass(eq=False)
class RequestHandle:
    request_id: str
    seq: Sequence
    text: OutputText
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Output] = field(default_factory=asyncio.Queue)
    arrival: float = field(default_factory=time.monotonic)
    last_token_at: float | None = None
    streaming: bool = True  # False: updates are held back and delivered with the final one (one wake-up)
    held: list[Output] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # filled during prefill when asked for
    prompt_logprobs_sent: bool = False

    async def __aiter__(self) -> AsyncIterator[Output]:
        while True:
            out = await self.queue.get()
            yield out
            if out.finish_reason is not None or out.error is not None:
                return
