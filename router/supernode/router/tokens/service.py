"""Prompt token ids for the request path: which tokenizer serves a model, encoding off the event loop.

``apply`` fills a prepared request's real token ids, its engine-compatible block hashes and its real
prompt token count (admission reserves with it). Without a tokenizer for the model the request goes on
with approximate routing and an estimated count: logged once per model and counted, never an error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from supernode.api.models import Mode
from supernode.api.prompttokens import Piece, PieceCache
from supernode.router.contracts import PoolKey
from supernode.router.pipeline import Prepared
from supernode.router.tokens.metrics import TokenMetrics
from supernode.router.tokens.model import ModelTokenizer, Rendered, given_ids

log = logging.getLogger("supernode.router.tokens")


class PromptTokens:
    def __init__(self, metrics: TokenMetrics, *, max_blocks: int, inline_chars: int = 16_384,
                 workers: int = 2, cache_chars: int = 32 << 20, max_pending_replies: int = 64) -> None:
        self.metrics, self.max_blocks, self.inline_chars, self.workers = metrics, max_blocks, inline_chars, workers
        self.cache_chars, self.max_pending_replies = cache_chars, max_pending_replies
        self._pending_replies = 0
        self._closed = False
        self._models: dict[str, ModelTokenizer] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        metrics.watch(lambda: dict(self._models))

    # --- the registry -----------------------------------------------------------------------------
    def get(self, model: str) -> ModelTokenizer | None:
        return self._models.get(model)

    def set(self, model: str, tokenizer: ModelTokenizer) -> None:
        old = self._models.get(model)
        tokenizer.cache = PieceCache(max_chars=self.cache_chars)
        self._models[model] = tokenizer
        self._warned.discard(model)
        self.metrics.loaded(model, tokenizer.source, old.source if old else None)
        log.info("tokenizer for %s: %s (block size %d, template %s, digest %s)", model, tokenizer.source,
                 tokenizer.block_size, tokenizer.template, tokenizer.digest[:12])

    # --- the request path -------------------------------------------------------------------------
    async def apply(self, prep: Prepared) -> Prepared:
        """The prepared request with its real token ids, block hashes and prompt token count, when known."""
        model, mode = prep.resolved.model, prep.resolved.mode
        found = await self.tokenize(prep, model, mode)
        if found is None:
            given = given_ids(prep.parsed) if prep.parsed.extra.get("token_id_prompt") else None
            return prep if given is None else replace(prep, prompt_token_ids=given, prompt_tokens_estimate=len(given))
        ids, hashes = found
        return replace(prep, prompt_token_ids=ids, token_block_hashes=hashes, prompt_tokens_estimate=len(ids))

    async def hashes_for(self, prep: Prepared, pool: PoolKey) -> tuple[int, ...]:
        """Block hashes for the pool that serves (spill-over: another model's tokenizer or mode's template)."""
        if (pool.model, pool.mode) == (prep.resolved.model, prep.resolved.mode):
            return prep.token_block_hashes
        found = await self.tokenize(prep, pool.model, pool.mode, counted=False)
        return found[1] if found else ()

    async def tokenize(self, prep: Prepared, model: str, mode: Mode, *, counted: bool = True
                       ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Token ids and block hashes of the request's prompt for ``model`` in ``mode``, or None (approximate).
        ``counted``: the request's one count in the metrics (a spill-over's second rendering is not)."""
        tok = self._models.get(model)
        if tok is None:
            if counted:
                self._approximate(model, "no_tokenizer")
            return None
        rendered = tok.render(prep.parsed, mode)
        if rendered is None:
            if counted:
                self._approximate(model, "unrenderable")
            return None
        start = time.perf_counter()
        try:
            ids = await self._run(tok.cost_chars(rendered), lambda: _encode_and_hash(tok, rendered, self.max_blocks))
        except Exception as e:  # e.g. a configured tokenizer without the template's control tokens
            log.warning("prompt for %s not encoded (%s): routed approximately", model, e)
            if counted:
                self._approximate(model, "unrenderable")
            return None
        if counted:
            self.metrics.tokenized(model, "token_ids" if rendered.ids is not None else "exact",
                                   time.perf_counter() - start)
        return ids

    def remember_reply(self, model: str, text: str) -> Future[list[int]] | None:
        """Encode a chat reply the router relayed into ``model``'s piece cache, in the background: a client
        sends it back as the assistant turn of its next request, which then finds its ids cached. Skipped
        when the text is too short to cache or already there, and when ``max_pending_replies`` wait."""
        tok = self._models.get(model)
        if tok is None or self._closed or len(text) < tok.cache.min_chars:
            return None
        if not tok.cache.uncached_chars([Piece(text)]):  # cached already
            return None
        with self._lock:
            busy = self._pending_replies >= self.max_pending_replies
            self._pending_replies += not busy
        self.metrics.replies.labels(model, "busy" if busy else "cached").inc()
        if busy:
            return None
        try:
            future = self._executor().submit(tok.tokenizer.encode_pieces, [Piece(text)], tok.cache)
        except RuntimeError:  # closed meanwhile (shutdown): nothing to cache for
            self._reply_done(None)
            return None
        future.add_done_callback(self._reply_done)
        return future

    def _reply_done(self, _: object) -> None:
        with self._lock:
            self._pending_replies -= 1

    def _approximate(self, model: str, reason: str) -> None:
        self.metrics.approximate(model, reason)
        if reason == "no_tokenizer" and model not in self._warned:
            self._warned.add(model)
            log.warning("no tokenizer for model %s: its prefix routing stays approximate and its prompt token "
                        "counts are estimates (builtin engines serve theirs; others: tokenizers.models)", model)

    async def _run(self, chars: int, work: Callable[[], tuple[tuple[int, ...], tuple[int, ...]]]
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if chars <= self.inline_chars:
            return work()  # a few milliseconds at most
        return await asyncio.get_running_loop().run_in_executor(self._executor(), work)  # encoding releases the GIL

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="router-tokenize")
            return self._pool

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _encode_and_hash(tok: ModelTokenizer, rendered: Rendered, max_blocks: int
                     ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ids = tok.encode(rendered)
    return ids, tok.hashes(ids, max_blocks)
