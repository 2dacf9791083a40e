"""The engine loop: a dedicated thread drives scheduler → runner.run → sample → per-request streams.

The HTTP side (asyncio) only calls ``submit`` / ``abort`` / ``subscribe_kv_events``; those hand work
to the engine thread through a locked inbox. Results go back with ``loop.call_soon_threadsafe``.
KV events go out through ``kv_stream.KVEventStream`` (numbering, resume log, subscribers, sinks).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable

import torch

from supernode.engine.chat import Delta, OutputText
from supernode.engine.core.context import check_prompt_fits
from supernode.engine.core.scheduler import ScheduledSeq, Scheduler
from supernode.engine.core.sequence import FinishReason, ReasoningControl, SamplingParams, Sequence
from supernode.engine.core.state_blocks import make_block_manager
from supernode.engine.engine_types import (
    EngineDead,
    EngineOptions,
    EngineOverloaded,
    Output,
    RequestHandle,
    Runner,
    SeqInput,
)
from supernode.engine.kv_stream import KVEventStream, KVQueue, KVSink
from supernode.engine.logprobs import TokenLogprob, log_probs, prompt_logprobs, token_logprob
from supernode.engine.metrics import EngineMetrics
from supernode.engine.outbox import Outbox
from supernode.engine.sampler import Sampler
from supernode.engine.tokenizer import Tokenizer
from supernode.engine.tool_calls import ToolCallParser

log = logging.getLogger("supernode.engine")

__all__ = ["EngineDead", "EngineOptions", "EngineOverloaded", "LLMEngine", "Output", "RequestHandle", "SeqInput"]


class LLMEngine:
    def __init__(self, runner: Runner, tokenizer: Tokenizer, options: EngineOptions, metrics: EngineMetrics) -> None:
        self.runner, self.tokenizer, self.options, self.metrics = runner, tokenizer, options, metrics
        self.blocks = make_block_manager(runner, options.model_name, options.max_num_seqs)
        self.scheduler = Scheduler(options.scheduler_config(), self.blocks)
        if (room := self.blocks.num_blocks * self.blocks.block_size) < options.max_model_len:
            # `serve` caps the context at the cache; an embedder may not. A prompt the cache can never hold is
            # then accepted and ended at once (finish_reason "length", no tokens, the model never run).
            log.warning("max_model_len %d exceeds the KV cache's %d tokens: longer prompts finish at once with "
                        "no output", options.max_model_len, room)
        self.sampler = Sampler(options.seed)
        self.eos_ids = (tokenizer.eos_id,)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: list[RequestHandle] = []
        self._aborts: list[str] = []
        self._active: dict[str, RequestHandle] = {}  # engine thread only
        self._by_seq: dict[int, RequestHandle] = {}  # seq_id → handle (engine thread only)
        self._preempt_seen = 0
        self._outbox = Outbox()
        self._num_open = 0  # submitted and not finished (guarded by _lock)
        # KV events are numbered per engine instance; the last ones are kept so a subscriber can resume.
        self.kv_events = KVEventStream(options.kv_events_log, self.blocks.cached_hashes, self.blocks.reuse_ends)
        self._ids = itertools.count()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.on_fatal: Callable[[BaseException], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="engine-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self.kv_events.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    # --- asyncio side -------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        thinking_budget: int | None = None,
        request_id: str | None = None,
        streaming: bool = True,
        tool_parser: ToolCallParser | None = None,
    ) -> RequestHandle:
        """Queue a request. Raises ContextLengthExceeded, ValueError (bad prompt), EngineOverloaded, EngineDead."""
        if not self.alive:
            raise EngineDead(f"engine loop is not running: {self.error!r}")
        check_prompt_fits(len(prompt_ids), self.options.max_model_len)
        if any((not isinstance(t, int)) or t < 0 or t >= self.tokenizer.vocab_size for t in prompt_ids):
            raise ValueError(f"prompt token ids must be integers in [0, {self.tokenizer.vocab_size})")
        reasoning = None
        if thinking_budget is not None:
            # Keep room for an answer: the budget never takes more than half of max_tokens.
            # (max_tokens also pays for the forced `</think>` itself.)
            budget = min(thinking_budget, max(0, params.max_tokens - 1 - min(64, params.max_tokens // 2)))
            reasoning = ReasoningControl(self.tokenizer.think_close_id, budget)
        seq = Sequence(list(prompt_ids), params, reasoning, arrival=time.monotonic())
        text = OutputText(self.tokenizer, thinking=reasoning is not None, stop=params.stop, tools=tool_parser)
        rid = request_id or f"req-{next(self._ids)}"
        handle = RequestHandle(rid, seq, text, asyncio.get_running_loop(), streaming=streaming)
        with self._lock:
            if self._num_open >= self.options.max_num_seqs + self.options.max_waiting:
                self.metrics.rejected.inc()
                raise EngineOverloaded(retry_after=1.0)
            self._num_open += 1
            self._inbox.append(handle)
            self._wake.notify()
        return handle

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborts.append(request_id)
            self._wake.notify()

    @property
    def kv_instance(self) -> str:
        return self.kv_events.instance

    @property
    def kv_sinks(self) -> list[KVSink]:
        """Offered each step's events on the engine thread; closed by stop()."""
        return self.kv_events.sinks

    def subscribe_kv_events(self, maxsize: int = 10_000, after: int | None = None) -> KVQueue:
        """A queue of numbered KV events ``(seq, event)``: those after ``after`` when this instance still
        keeps them all, else first a snapshot (every cached block, numbered with the last seq), then changes.

        ``None`` in the queue means the subscriber fell behind and must resubscribe.
        """
        q = self.kv_events.subscribe(maxsize, after)
        with self._lock:
            self._wake.notify()  # the engine thread sends the backlog
        return q

    def unsubscribe_kv_events(self, q: KVQueue) -> None:
        self.kv_events.unsubscribe(q)

    # --- engine thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not (
                        self._stop or self._inbox or self._aborts or self.kv_events.has_pending
                        or self.scheduler.has_work
                    ):
                        self._wake.wait()
                    if self._stop:
                        break
                    inbox, self._inbox = self._inbox, []
                    aborts, self._aborts = self._aborts, []
                self.kv_events.attach_pending()
                for handle in inbox:
                    self._active[handle.request_id] = handle
                    self._by_seq[handle.seq.seq_id] = handle
                    self.scheduler.add(handle.seq)
                for rid in aborts:
                    if (aborted := self._active.get(rid)) is not None:
                        self.scheduler.abort(aborted.seq)
                self.step()
        except BaseException as exc:  # a runner failure ends the engine; the server exits non-zero
            log.exception("engine loop failed")
            self.error = exc
            self._fail_all(f"engine failure: {exc}")
            if self.on_fatal is not None:
                self.on_fatal(exc)

    def step(self) -> None:
        batch = self.scheduler.schedule()
        sampled: list[int | None] = [None] * len(batch)
        logprob_rows: dict[int, torch.Tensor] = {}  # seq_id → log-probabilities of its next token
        if batch:
            every = [b.seq.wants_prompt_logits for b in batch]
            inputs = [
                SeqInput(
                    b.token_ids,
                    b.start_pos,
                    list(b.seq.block_table),
                    *self.blocks.state_args(b.seq, b.start_pos, b.num_tokens),
                    all_logits=e,
                )
                for b, e in zip(batch, every, strict=True)
            ]
            logits = self.runner.run(inputs)
            if any(every):  # some items returned a row per token: keep each item's last row for sampling
                ends = list(itertools.accumulate(b.num_tokens if e else 1 for b, e in zip(batch, every, strict=True)))
                self._prompt_logprobs(batch, every, ends, logits)
                logits = logits[[end - 1 for end in ends]]
            rows = [i for i, b in enumerate(batch) if b.samples]
            if rows:
                seqs = [batch[i].seq for i in rows]
                penalised = any(q.params.presence_penalty or q.params.frequency_penalty for q in seqs)
                outputs = [q.output_token_ids for q in seqs] if penalised else None
                tokens = self.sampler.sample(logits[rows], [q.seq_id for q in seqs], [q.params for q in seqs], outputs)
                for i, t in zip(rows, tokens, strict=True):
                    sampled[i] = t
                wanted = [i for i in rows if batch[i].seq.params.logprobs is not None]
                if wanted:
                    for i, row in zip(wanted, log_probs(logits[wanted]), strict=True):
                        logprob_rows[batch[i].seq.seq_id] = row
        progressed = self.scheduler.postprocess(batch, sampled, self.eos_ids)
        now = time.monotonic()
        for seq in progressed:
            if (handle := self._by_seq.get(seq.seq_id)) is not None:
                self._emit_token(handle, now, logprob_rows.get(seq.seq_id))
        for handle in list(self._active.values()):
            if handle.seq.is_finished:
                self._emit_finish(handle, now)
        self._outbox.flush()
        self.kv_events.publish(self.blocks.drain_events())
        self._update_gauges()
        running = len(self.scheduler.running)
        self.kv_events.set_load(running, max(0, self._num_open - running))  # waiting: queued or not yet scheduled

    def _prompt_logprobs(
        self, batch: list[ScheduledSeq], every: list[bool], ends: list[int], logits: torch.Tensor
    ) -> None:
        """Kept on the handle until the first update goes out (``_take_prompt_logprobs``)."""
        for item, e, end in zip(batch, every, ends, strict=True):
            if e and (handle := self._by_seq.get(item.seq.seq_id)) is not None:
                handle.prompt_logprobs += prompt_logprobs(item.seq, item.start_pos, logits[end - item.num_tokens : end])

    def _emit_token(self, handle: RequestHandle, now: float, logprob_row: torch.Tensor | None) -> None:
        seq = handle.seq
        token = seq.token_ids[-1]
        logprobs = []
        if logprob_row is not None and seq.params.logprobs is not None:
            logprobs = [token_logprob(logprob_row, token, seq.params.logprobs, handle.text.in_reasoning)]
        m = self.metrics
        m.generation_tokens.inc()
        if handle.last_token_at is None:
            m.ttft.observe(now - handle.arrival)
            m.prompt_tokens.inc(seq.num_prompt_tokens)
            m.prefix_queries.inc(seq.num_prompt_tokens)
            m.prefix_hits.inc(seq.num_cached_tokens)
        else:
            m.itl.observe(now - handle.last_token_at)
        handle.last_token_at = now
        delta = handle.text.push(token)
        if handle.text.stopped and not seq.is_finished:
            self.scheduler.finish(seq, FinishReason.STOP)
        if seq.is_finished:
            delta = delta + handle.text.finish()
        self._outbox.send(handle, Output(delta, [token], logprobs, self._take_prompt_logprobs(handle)))

    @staticmethod
    def _take_prompt_logprobs(handle: RequestHandle) -> list[TokenLogprob] | None:
        """The prompt's log-probabilities, once: with the first token, or the final update if none came."""
        if handle.seq.params.prompt_logprobs is None or handle.prompt_logprobs_sent:
            return None
        handle.prompt_logprobs_sent = True
        return handle.prompt_logprobs

    def _emit_finish(self, handle: RequestHandle, now: float) -> None:
        seq = handle.seq
        del self._active[handle.request_id]
        del self._by_seq[seq.seq_id]
        self.sampler.forget(seq.seq_id)
        reason = (seq.finish_reason or FinishReason.ABORT).value
        self.metrics.finished(reason)
        self.metrics.e2e.observe(now - handle.arrival)
        if seq.num_output_tokens > 1 and handle.last_token_at is not None:
            self.metrics.tpot.observe((now - handle.arrival) / seq.num_output_tokens)
        with self._lock:
            self._num_open -= 1
        self._outbox.send(
            handle,
            Output(
                Delta(),
                [],
                prompt_logprobs=self._take_prompt_logprobs(handle),
                finish_reason=reason,
                prompt_tokens=seq.num_prompt_tokens,
                cached_tokens=seq.num_cached_tokens,
                completion_tokens=seq.num_output_tokens,
                reasoning_tokens=seq.num_reasoning_tokens,
            ),
        )

    def _update_gauges(self) -> None:
        m = self.metrics
        m.running.set(len(self.scheduler.running))
        m.waiting.set(len(self.scheduler.waiting))
        m.gpu_cache_usage.set(self.blocks.usage)
        m.kv_cache_usage.set(self.blocks.usage)
        m.preemptions.inc(self.scheduler.num_preemptions - self._preempt_seen)
        self._preempt_seen = self.scheduler.num_preemptions

    def _fail_all(self, message: str) -> None:
        with self._lock:
            handles = list(self._active.values()) + self._inbox
            self._inbox = []
        for handle in handles:
            self._outbox.send(handle, Output(Delta(), [], error=message))
        self._outbox.flush()

