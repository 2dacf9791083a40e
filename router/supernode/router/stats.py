"""Engine stats: a pure Prometheus-text parser with per-engine-type metric names, and the scraper loop
that probes `/health` and `/metrics` of every endpoint concurrently, ejecting and re-admitting."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from supernode.api.models import EngineType
from supernode.router.routing.state import NO_BACKOFF, Backoff, EndpointState, EndpointTable, EngineStats

log = logging.getLogger("supernode.router.stats")

# engine type → (running, waiting, kv usage 0..1) metric names
METRIC_NAMES: dict[EngineType, tuple[str, str, str]] = {
    EngineType.BUILTIN: ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc"),
    EngineType.VLLM: ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc"),
    EngineType.SGLANG: ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage"),
    EngineType.MINDIE: ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc"),
}
# vLLM ≥ 0.10 renamed the KV gauge; accept either.
ALTERNATES = {"vllm:gpu_cache_usage_perc": ("vllm:kv_cache_usage_perc",)}


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum of every sample per metric name (labels dropped); comments and bad lines skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            rest = rest.rpartition("}")[2]
        else:
            name, _, rest = line.partition(" ")
        parts = rest.split()
        if not name or not parts:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        if value != value:  # NaN
            continue
        out[name.strip()] = out.get(name.strip(), 0.0) + value
    return out


def _get(samples: dict[str, float], name: str) -> float:
    if name in samples:
        return samples[name]
    for alt in ALTERNATES.get(name, ()):
        if alt in samples:
            return samples[alt]
    return 0.0


def engine_stats(text: str, engine: EngineType) -> EngineStats:
    running, waiting, kv = METRIC_NAMES[engine]
    samples = parse_prometheus(text)
    return EngineStats(running=_get(samples, running), waiting=_get(samples, waiting),
                       kv_usage=min(1.0, max(0.0, _get(samples, kv))), scraped=True)


class Scraper:
    """Owned by the app's lifespan; one round probes every endpoint concurrently."""

    def __init__(self, table: EndpointTable, client: httpx.AsyncClient, *, interval_s: float, timeout_s: float,
                 unhealthy_after: int, healthy_after: int,
                 on_health: Callable[[EndpointState], None] | None = None, backoff: Backoff = NO_BACKOFF,
                 on_eject: Callable[[EndpointState], None] | None = None):
        self.table = table
        self.client = client
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.unhealthy_after = unhealthy_after
        self.healthy_after = healthy_after
        self.on_health = on_health
        self.backoff, self.on_eject = backoff, on_eject

    async def probe(self, state: EndpointState) -> None:
        url = state.endpoint.url.rstrip("/")
        try:
            health = await self.client.get(f"{url}/health", timeout=self.timeout_s)
            if health.status_code != 200:
                raise httpx.HTTPStatusError(f"health {health.status_code}", request=health.request,
                                            response=health)
            metrics = await self.client.get(f"{url}/metrics", timeout=self.timeout_s)
            if metrics.status_code == 200:
                state.apply_scrape(engine_stats(metrics.text, state.endpoint.engine_type))
            if state.record_success(self.healthy_after, time.monotonic()):
                log.info("endpoint %s re-admitted after %d ejection(s) in a row", url, state.ejections)
        except (httpx.HTTPError, OSError) as e:
            if state.record_failure(self.unhealthy_after, time.monotonic(), self.backoff):
                log.warning("endpoint %s ejected after %d failures for at least %.1fs: %s", url, state.failures,
                            state.ejected_until - time.monotonic(), e)
                if self.on_eject:
                    self.on_eject(state)
        if self.on_health:
            self.on_health(state)

    async def round(self) -> None:
        states = list(self.table)
        if states:
            await asyncio.gather(*(self.probe(s) for s in states))

    async def run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.interval_s)
