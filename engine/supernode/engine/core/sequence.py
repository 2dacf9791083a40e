"""One request's state inside the engine: tokens, KV blocks, sampling parameters, status."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.StrEnum):
    STOP = "stop"  # a stop token or stop string
    LENGTH = "length"  # max_tokens or the context limit
    ABORT = "abort"  # cancelled by the client or the engine


MAX_LOGPROBS = 20  # top alternatives per token (OpenAI's limit)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling settings (validated here, so the HTTP layer can report the field)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    presence_penalty: float = 0.0  # subtracted once from every token already generated
    frequency_penalty: float = 0.0  # subtracted per occurrence in the generated tokens
    logprobs: int | None = None  # report each generated token's log-probability and this many top alternatives
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (its whole prompt is computed)

    def __post_init__(self) -> None:
        if self.max_tokens < (0 if self.prompt_logprobs is not None else 1):
            raise ValueError("max_tokens: must be >= 1 (0 only to score a prompt: with prompt log-probabilities)")
        if self.temperature < 0:
            raise ValueError("temperature: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k: must be >= 0")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name}: must be in [-2, 2]")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_LOGPROBS:
                raise ValueError(f"{name}: must be in [0, {MAX_LOGPROBS}]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class ReasoningControl:
    """Thinking-mode bookkeeping: the answer begins after ``think_close_id``.

    ``budget`` caps reasoning tokens; when reached (or when the model tries to end inside its
    reasoning) the engine forces ``think_close_id`` so every request gets an answer.
    """

    think_close_id: int
    budget: int


_ids = itertools.count()


@dataclass(slots=True, eq=False)
class Sequence:
    """Mutable per-request state; owned by the engine thread only."""

    token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    reasoning: ReasoningControl | None = None
    arrival: float = 0.0
    seq_id: int = field(default_factory=lambda: next(_ids))
    num_prompt_tokens: int = 0
    num_computed_tokens: int = 0  # tokens whose KV is in the cache (cached or computed)
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache on first admission
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of full blocks (lazily grown)
    num_hashed_blocks: int = 0  # leading blocks of block_table registered in the prefix cache
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    num_reasoning_tokens: int = 0
    reasoning_done: bool = False
    num_preemptions: int = 0
    admitted_once: bool = False
    num_prompt_logprobs: int = 0  # prompt positions (from 1) whose log-probabilities were reported

    @property
    def wants_prompt_logits(self) -> bool:
        """The runner must return logits for every position computed now (prompt log-probabilities)."""
        return self.params.prompt_logprobs is not None and self.num_prompt_logprobs < self.num_prompt_tokens - 1

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError("prompt: must contain at least one token")
        self.num_prompt_tokens = len(self.token_ids)
        if self.reasoning is None:
            self.reasoning_done = True

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    def choose_token(self, sampled: int, eos_ids: Seq[int]) -> int:
        """The token actually appended: the sampled one, or ``</think>`` forced by the reasoning budget."""
        r = self.reasoning
        if r is None or self.reasoning_done:
            return sampled
        over_budget = self.num_reasoning_tokens >= r.budget
        ends_inside = sampled in eos_ids or sampled in self.params.stop_token_ids
        return r.think_close_id if over_budget or ends_inside else sampled

    def append_token(self, token: int, eos_ids: Seq[int]) -> None:
        """Append a generated token and decide whether the sequence is finished (token-level stops)."""
        self.token_ids.append(token)
        if not self.reasoning_done:
            assert self.reasoning is not None
            if token == self.reasoning.think_close_id:
                self.reasoning_done = True
            else:
                self.num_reasoning_tokens += 1
        p = self.params
        is_close = self.reasoning is not None and token == self.reasoning.think_close_id
        if (
            self.reasoning_done
            and not is_close
            and ((not p.ignore_eos and token in eos_ids) or token in p.stop_token_ids)
        ):
            self.finish_reason = FinishReason.STOP
            return
        if self.num_output_tokens >= p.max_tokens:
            self.finish_reason = FinishReason.LENGTH
