"""Prometheus metrics, vLLM names where the meaning matches. One CollectorRegistry per engine."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
_E2E_BUCKETS = (0.1, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 600.0)


class EngineMetrics:
    """All engine metrics; labelled with ``model_name`` like vLLM."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        r, labels = self.registry, ["model_name"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, [*labels, *extra], registry=r)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        m = model_name
        self.running = gauge("vllm:num_requests_running", "Requests in the running batch").labels(m)
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled").labels(m)
        self.gpu_cache_usage = gauge("vllm:gpu_cache_usage_perc", "KV-cache block usage (1 = 100%)").labels(m)
        self.kv_cache_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache block usage (1 = 100%)").labels(m)
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache"
        ).labels(m)
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache").labels(m)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens processed").labels(m)
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated").labels(m)
        self.preemptions = counter("vllm:num_preemptions", "Sequences preempted (recomputed)").labels(m)
        self._success = counter("vllm:request_success", "Finished requests", ("finished_reason",))
        self._model = m
        self.rejected = counter(
            "supernode:engine_requests_rejected", "Requests refused because the queue is full"
        ).labels(m)
        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token", _LATENCY_BUCKETS).labels(m)
        self.itl = hist("vllm:inter_token_latency_seconds", "Time between output tokens", _LATENCY_BUCKETS).labels(m)
        self.tpot = hist("vllm:time_per_output_token_seconds", "Time per output token", _LATENCY_BUCKETS).labels(m)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "End-to-end request latency", _E2E_BUCKETS).labels(m)

    def finished(self, reason: str) -> None:
        self._success.labels(self._model, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
