"""Builds the router's prompt-token parts from its config (the app owns their lifetime)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from supernode.router.config import RouterConfig
from supernode.router.tokens.fetch import TokenizerFetcher
from supernode.router.tokens.metrics import TokenMetrics
from supernode.router.tokens.model import file_tokenizer
from supernode.router.tokens.service import PromptTokens


def build_tokens(config: RouterConfig, registry: CollectorRegistry) -> tuple[PromptTokens, TokenizerFetcher | None]:
    tk = config.tokenizers
    tokens = PromptTokens(TokenMetrics(registry), max_blocks=config.routing.prefix.max_blocks_per_request,
                          inline_chars=tk.inline_chars, workers=tk.workers, cache_chars=tk.cache_chars)
    fetcher = TokenizerFetcher(tokens, skip_models=tk.models, retry_s=tk.retry_s) if tk.fetch_from_engines else None
    return tokens, fetcher


async def load_local_tokenizers(tokens: PromptTokens, config: RouterConfig) -> None:
    """The tokenizer files the config names; one that does not load stops the router at start."""
    for model, local in config.tokenizers.models.items():
        tokens.set(model, await asyncio.to_thread(file_tokenizer, model, local))
