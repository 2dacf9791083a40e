"""Fetches each served model's tokenizer from its built-in engines (``GET /v1/tokenizer``).

Discovery reports endpoints (``observe``); every ready built-in endpoint not yet asked is asked once,
with ``If-None-Match`` of the model's current tokenizer, so a second group of the same model answers 304
and nothing is parsed again. An endpoint that leaves (or stops being ready) is asked again when it is
back: a restarted engine may serve another checkpoint. Failures are retried after ``retry_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import aiohttp

from supernode.api.chattemplate import TEMPLATE_ID
from supernode.api.endpoints import Endpoint
from supernode.api.models import EngineType
from supernode.api.prompttokens import PromptTokenizer, tokenizer_digest
from supernode.api.tokenizerinfo import TOKENIZER_PATH, TokenizerInfo
from supernode.router.tokens.model import ModelTokenizer
from supernode.router.tokens.service import PromptTokens

log = logging.getLogger("supernode.router.tokens")


class TokenizerFetcher:
    def __init__(self, tokens: PromptTokens, *, skip_models: Iterable[str] = (), retry_s: float = 5.0,
                 timeout_s: float = 60.0) -> None:
        self.tokens, self.retry_s, self.timeout_s = tokens, retry_s, timeout_s
        self.skip_models = frozenset(skip_models)  # a local tokenizer file is configured for these
        self._pending: dict[str, Endpoint] = {}  # url -> endpoint still to ask
        self._asked: set[str] = set()
        self._wake = asyncio.Event()

    def observe(self, endpoints: Iterable[Endpoint]) -> None:
        current = {e.url: e for e in endpoints
                   if e.engine_type is EngineType.BUILTIN and e.ready and e.model not in self.skip_models}
        self._asked &= current.keys()  # gone or not ready: asked again when it is back
        self._pending = {url: e for url, e in current.items() if url not in self._asked}
        if self._pending:
            self._wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            failed = False
            for url, endpoint in list(self._pending.items()):
                ok = await self.fetch(session, endpoint)
                if ok and self._pending.get(url) is endpoint:
                    del self._pending[url]
                    self._asked.add(url)
                failed |= not ok
            if failed:
                await asyncio.sleep(self.retry_s)
                self._wake.set()

    async def fetch(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> bool:
        """Ask one engine; True when its answer was taken (loaded, unchanged or rejected for good)."""
        model = endpoint.model
        current = self.tokens.get(model)
        headers = {"if-none-match": current.etag} if current is not None and current.etag else {}
        try:
            async with session.get(endpoint.url.rstrip("/") + TOKENIZER_PATH, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                if resp.status == 304:
                    self.tokens.metrics.fetched(model, "unchanged")
                    return True
                if resp.status == 404:  # an engine without the endpoint: nothing to retry
                    return self._reject(model, endpoint, "it has no /v1/tokenizer")
                if resp.status != 200:
                    raise aiohttp.ClientError(f"HTTP {resp.status}")
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            self.tokens.metrics.fetched(model, "failed")
            log.info("tokenizer of %s from %s not fetched (%s); retrying in %.0fs", model, endpoint.url, e,
                     self.retry_s)
            return False
        try:  # megabytes of JSON and a tokenizer build: off the event loop
            loaded = await asyncio.to_thread(_load, raw, model)
        except ValueError as e:
            return self._reject(model, endpoint, str(e))
        if current is not None and current.digest != loaded.digest:
            log.warning("endpoints of %s serve different tokenizers; %s's (digest %s) now replaces %s", model,
                        endpoint.url, loaded.digest[:12], current.digest[:12])
        self.tokens.set(model, loaded)
        self.tokens.metrics.fetched(model, "loaded")
        return True

    def _reject(self, model: str, endpoint: Endpoint, why: str) -> bool:
        self.tokens.metrics.fetched(model, "rejected")
        log.warning("tokenizer of %s from %s not used: %s (routing for it stays approximate)", model,
                    endpoint.url, why)
        return True


def _load(raw: bytes, model: str) -> ModelTokenizer:
    try:
        info = TokenizerInfo.model_validate_json(raw)
    except ValueError as e:
        raise ValueError(f"bad /v1/tokenizer answer: {str(e)[:200]}") from None
    if info.model != model:
        raise ValueError(f"it serves {info.model!r}, discovery says {model!r}")
    if info.template != TEMPLATE_ID:
        raise ValueError(f"its chat template is {info.template!r}, this router renders {TEMPLATE_ID!r}")
    if tokenizer_digest(info.tokenizer) != info.digest:
        raise ValueError("its tokenizer does not match its digest")
    try:
        tok = PromptTokenizer.from_str(info.tokenizer)
    except Exception as e:  # tokenizers raises its own exception type for bad JSON
        raise ValueError(f"its tokenizer does not load: {e}") from None
    return ModelTokenizer(tok, info.hash_seed, info.block_size, info.template, info.digest, "engine", info.etag)
