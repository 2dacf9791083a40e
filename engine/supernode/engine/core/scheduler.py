"""Continuous-batching scheduler: chunked prefill, decode batching, preemption by recompute.

Each step has a token budget (``max_num_batched_tokens``) and a sequence budget (``max_num_seqs``).
Running sequences are served first, oldest first (a decode needs one token, an unfinished prefill
takes a chunk); then waiting sequences are admitted in arrival order while blocks and budgets last.
When a running sequence needs a block and none is free, the newest running sequence is preempted:
its blocks are freed and it goes back to the head of the waiting queue to be recomputed (its
prefix will often still be cached).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from supernode.engine.core.block_manager import BlockManager
from supernode.engine.core.context import check_prompt_fits
from supernode.engine.core.sequence import FinishReason, Sequence, SequenceStatus


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Per-step budgets and the context limit (derived from EngineConfig via ``EngineOptions``; no defaults here)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be positive")


@dataclass(frozen=True, slots=True)
class ScheduledSeq:
    seq: Sequence
    start_pos: int  # first position computed this step
    num_tokens: int  # tokens computed this step

    @property
    def token_ids(self) -> list[int]:
        return self.seq.token_ids[self.start_pos : self.start_pos + self.num_tokens]

    @property
    def samples(self) -> bool:
        """True when this step reaches the sequence's last token (its logits give the next token)."""
        return self.start_pos + self.num_tokens == len(self.seq)


@dataclass(slots=True)
class Scheduler:
    config: SchedulerConfig
    blocks: BlockManager
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)
    num_preemptions: int = 0

    def add(self, seq: Sequence) -> None:
        check_prompt_fits(len(seq), self.config.max_model_len)
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, seq: Sequence) -> None:
        """Cancel a sequence wherever it is and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._finish(seq, FinishReason.ABORT)

    def schedule(self) -> list[ScheduledSeq]:
        budget = self.config.max_num_batched_tokens
        out: list[ScheduledSeq] = []
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            while not self.blocks.can_append(seq, n):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.blocks.append_slots(seq, n)
                out.append(ScheduledSeq(seq, seq.num_computed_tokens, n))
                budget -= n
                i += 1
                continue
            break  # seq itself was preempted; everything after it already was
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if not self.blocks.admit(seq, budget):
                if not self.running and not out:
                    # Nothing else holds blocks: it can never fit.
                    self.waiting.popleft()
                    self._finish(seq, FinishReason.LENGTH)
                    continue
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = min(seq.num_uncomputed_tokens, budget)
            out.append(ScheduledSeq(seq, seq.num_computed_tokens, n))
            budget -= n
        return out

    def postprocess(self, batch: Seq[ScheduledSeq], sampled: Seq[int | None], eos_ids: Seq[int]) -> list[Sequence]:
        """Advance computed counts, append sampled tokens, finish sequences; returns those that got a token."""
        progressed: list[Sequence] = []
        for item, token in zip(batch, sampled, strict=True):
            seq = item.seq
            if seq.is_finished or seq.status is not SequenceStatus.RUNNING:
                continue  # aborted while the step ran
            seq.num_computed_tokens = item.start_pos + item.num_tokens
            self.blocks.commit(seq)
            if not item.samples or token is None:
                continue
            if seq.params.max_tokens == 0:  # scoring a prompt: computed, nothing to generate
                self.running.remove(seq)
                self._finish(seq, FinishReason.LENGTH)
                continue
            seq.append_token(seq.choose_token(token, eos_ids), eos_ids)
            if seq.finish_reason is None and len(seq) >= self.config.max_model_len:
                seq.finish_reason = FinishReason.LENGTH
            progressed.append(seq)
            if seq.finish_reason is not None:
                self.running.remove(seq)
                self._finish(seq, seq.finish_reason)
        return progressed

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Finish a running sequence early (e.g. a stop string seen by the detokenizer)."""
        if seq in self.running:
            self.running.remove(seq)
        self._finish(seq, reason)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        if seq.status is SequenceStatus.FINISHED:
            return
        self.blocks.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
