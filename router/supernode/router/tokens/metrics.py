"""Metrics of the router's prompt tokenization (on the router's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from supernode.router.metrics import FAST_BUCKETS


class TokenMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.prompts = Counter(
            "supernode_router_prompt_tokenization_total", "Prompts by how the router knows their tokens: exact "
            "(encoded with the engine's tokenizer), token_ids (given by the client), no_tokenizer / unrenderable "
            "(approximate routing, estimated token count)", ["model", "result"], registry=r)
        self.seconds = Histogram("supernode_router_prompt_tokenize_seconds", "Encoding + block hashing time of "
                                 "one prompt", buckets=FAST_BUCKETS, registry=r)
        self.fetches = Counter("supernode_router_tokenizer_fetches_total", "GET /v1/tokenizer from engines by "
                               "outcome: loaded, unchanged, failed, rejected", ["model", "outcome"], registry=r)
        self.replies = Counter("supernode_router_reply_texts_total", "Relayed chat replies by what the router did "
                               "with their text: cached (encoded in the background for the next turn, which sends "
                               "it back), busy (too many waiting to be encoded: skipped)", ["model", "outcome"],
                               registry=r)
        self.tokenizers = Gauge("supernode_router_tokenizer_loaded", "1 = the router encodes this model's prompts "
                                "exactly (source: engine or file)", ["model", "source"], registry=r)

    def loaded(self, model: str, source: str, previous: str | None) -> None:
        if previous is not None and previous != source:
            self.tokenizers.remove(model, previous)
        self.tokenizers.labels(model, source).set(1)

    def tokenized(self, model: str, result: str, seconds: float) -> None:
        self.prompts.labels(model, result).inc()
        self.seconds.observe(seconds)

    def approximate(self, model: str, reason: str) -> None:
        self.prompts.labels(model, reason).inc()

    def fetched(self, model: str, outcome: str) -> None:
        self.fetches.labels(model, outcome).inc()
