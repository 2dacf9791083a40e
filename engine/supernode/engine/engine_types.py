"""What the engine loop exchanges with its callers and its runner (kept apart from the loop itself)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from supernode.engine.chat import Delta, OutputText
from supernode.engine.core.sequence import Sequence


class Runner(Protocol):
    """What the engine needs from a model runner (``supernode.engine.runner.ModelRunner``)."""

    num_kv_blocks: int
    block_size: int

    def run(self, batch: list[Any]) -> torch.Tensor: ...


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


class EngineOverloaded(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("the engine's queue is full; retry later")
        self.retry_after = retry_after


class EngineDead(Exception):
    """The engine loop stopped (a runner failure); the process should exit."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    model_name: str
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int = 4096
    max_waiting: int = 256  # requests queued beyond the running batch; more → EngineOverloaded
    seed: int = 0


@dataclass(slots=True)
class Output:
    """One update of a request: text delta, new token ids, and (when finished) the final accounting."""

    delta: Delta
    token_ids: list[int]
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

    async def __aiter__(self) -> AsyncIterator[Output]:
        while True:
            out = await self.queue.get()
            yield out
            if out.finish_reason is not None or out.error is not None:
                return
