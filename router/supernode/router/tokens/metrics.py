"""Metrics of the router's prompt tokenization (on the router's registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supernode.router.metrics import FAST_BUCKETS
from supernode.router.tokens.model import ModelTokenizer


class TokenMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = self.registry = registry
        self._watching = False
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

    def watch(self, models: Callable[[], Mapping[str, ModelTokenizer]]) -> None:
        """Report each model's prompt encoder at scrape time (read from the live tokenizers: no hot-path cost)."""
        if not self._watching:
            self._watching = True
            self.registry.register(_EncoderCollector(models))

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


class _EncoderCollector(Collector):
    def __init__(self, models: Callable[[], Mapping[str, ModelTokenizer]]) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        encoder = GaugeMetricFamily("supernode_router_prompt_encoder", "1 = this encoder encodes the model's prompt "
                                    "text: fast (the C DeepSeek pre-tokenizer and BPE, supernode.api.fasttokens) or "
                                    "library (the tokenizers library)", labels=["model", "encoder"])
        entries = GaugeMetricFamily("supernode_router_pretoken_cache_entries", "Pre-tokens whose ids the fast "
                                    "encoder keeps", labels=["model"])
        restarts = CounterMetricFamily("supernode_router_pretoken_cache_restarts", "Times the fast encoder's "
                                       "pre-token cache filled up and started afresh", labels=["model"])
        fallbacks = CounterMetricFamily("supernode_router_prompt_encoder_fallbacks", "Texts the fast encoder left "
                                        "to the tokenizers library (a character its Unicode data does not know)",
                                        labels=["model"])
        for model, tok in sorted(self.models().items()):
            fast = tok.tokenizer.fast
            encoder.add_metric([model, "library" if fast is None else "fast"], 1)
            if fast is not None:
                entries.add_metric([model], fast.cached_pieces)
                restarts.add_metric([model], fast.restarts)
                fallbacks.add_metric([model], fast.fallbacks)
        yield from (encoder, entries, restarts, fallbacks)
