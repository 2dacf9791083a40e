"""Autoscaling signals: what this router sees of demand per model and mode, before any engine does.

`DemandGate` wraps whichever gatekeeper the app built (open or admission) and counts, per requested
pool: requests waiting for admission (and their prompt tokens, and the oldest wait), admitted requests
in flight (per served pool), admissions, spill-overs (served by another pool) and refusals for lack of
any ready endpoint (a cold model's demand). `signals()` is the JSON the operator's autoscaler reads
from every router replica (`GET /autoscaling/signals`); `DemandCollector` exports the same numbers to
Prometheus for HPA/KEDA (`autoscaling.mode: External`) and dashboards.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from supernode.router.contracts import Gatekeeper, PoolCapacity, PoolKey, RequestContext, Tenant, Ticket, Usage
from supernode.router.errors import NoCapacity
from supernode.router.routing.state import EndpointTable

SIGNALS_PATH = "/autoscaling/signals"


@dataclass(frozen=True, slots=True)
class _Waiting:
    pool: PoolKey
    tokens: int
    since: float


class _TrackedTicket:
    """The inner ticket; releasing it also ends its in-flight count (once)."""

    def __init__(self, inner: Ticket, gate: DemandGate) -> None:
        self._inner, self._gate = inner, gate
        self.pool, self.queued_seconds = inner.pool, inner.queued_seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def release(self, usage: Usage) -> None:
        gate, self._gate = self._gate, None  # type: ignore[assignment]
        if gate is None:
            return  # released already
        gate._in_flight[self.pool] = max(0, gate._in_flight[self.pool] - 1)
        self._inner.release(usage)


class DemandGate:
    """A Gatekeeper that counts demand and delegates everything to the one it wraps."""

    def __init__(self, inner: Gatekeeper, clock: Callable[[], float] = time.monotonic, *,
                 capacity: PoolCapacity | None = None, starting: Callable[[str], bool] | None = None,
                 hold_s: float = 0.0, poll_s: float = 0.25) -> None:
        self.inner = inner
        self._clock = clock
        # Scale to zero: a request for a model that is starting (no ready group) waits up to hold_s.
        self._capacity, self._starting, self.hold_s, self.poll_s = capacity, starting, hold_s, poll_s
        self._ids = itertools.count()
        self._waiting: dict[int, _Waiting] = {}
        self._in_flight: Counter[PoolKey] = Counter()
        self.admitted: Counter[PoolKey] = Counter()
        self.spilled: Counter[PoolKey] = Counter()
        self.no_capacity: Counter[PoolKey] = Counter()

    def __getattr__(self, name: str) -> Any:  # start/stop, tenants, reload_tenants, ... of the inner one
        return getattr(self.inner, name)

    def authenticate(self, api_key: str | None) -> Tenant:
        return self.inner.authenticate(api_key)

    def queue_length(self) -> int:
        return self.inner.queue_length()

    async def admit(self, ctx: RequestContext, pools: Sequence[PoolKey]) -> Ticket:
        if not pools:
            return await self.inner.admit(ctx, pools)
        requested = pools[0]
        key = next(self._ids)
        self._waiting[key] = _Waiting(requested, max(0, ctx.prompt_tokens_estimate), self._clock())
        try:
            ticket = await self._admit_holding(ctx, pools, requested)
        except NoCapacity:
            self.no_capacity[requested] += 1
            raise
        finally:
            del self._waiting[key]
        self.admitted[requested] += 1
        if ticket.pool != requested:
            self.spilled[requested] += 1
        self._in_flight[ticket.pool] += 1
        return _TrackedTicket(ticket, self)

    async def _admit_holding(self, ctx: RequestContext, pools: Sequence[PoolKey], requested: PoolKey) -> Ticket:
        """Admit; a cold model's request is held (queued, so the autoscaler sees it) until a group is ready."""
        deadline = self._clock() + self.hold_s
        while True:
            try:
                return await self.inner.admit(ctx, pools)
            except NoCapacity:
                if self._capacity is None or self._starting is None or not self._starting(requested.model):
                    raise
                if self._clock() >= deadline:
                    raise NoCapacity(f"model {requested.model!r} is starting (scaled to zero): no replica group "
                                     f"became ready within {self.hold_s:g}s", retry_after=max(5.0, self.hold_s / 4)
                                     ) from None
            while self._clock() < deadline and self._capacity.capacity(requested) <= 0:
                await asyncio.sleep(self.poll_s)

    def pools(self) -> list[dict[str, Any]]:
        """Per (model, mode): queued, queuedTokens, oldestWaitSeconds, inFlight and the three counters."""
        now = self._clock()
        keys = set(self._in_flight) | set(self.admitted) | set(self.no_capacity) | {
            w.pool for w in self._waiting.values()}
        out = []
        for pool in sorted(keys, key=lambda p: (p.model, p.mode.value)):
            waiting = [w for w in self._waiting.values() if w.pool == pool]
            out.append({"model": pool.model, "mode": pool.mode.value, "queued": len(waiting),
                        "queuedTokens": sum(w.tokens for w in waiting),
                        "oldestWaitSeconds": round(max((now - w.since for w in waiting), default=0.0), 3),
                        "inFlight": self._in_flight[pool], "admittedTotal": self.admitted[pool],
                        "spilledTotal": self.spilled[pool], "noCapacityTotal": self.no_capacity[pool]})
        return out


class ColdModels:
    """Models that may be scaled to zero (`cold_start.models`, or deployments Kubernetes discovery sees with
    `autoscaling.minReplicas: 0`): served even with no endpoint, and while
    none of their groups is ready their requests are held (queued) instead of refused at once."""

    def __init__(self, table: EndpointTable, configured: Sequence[str] = (),
                 discovered: Callable[[], set[str]] | None = None) -> None:
        self.table = table
        self.configured = set(configured)
        self.discovered = discovered  # e.g. Kubernetes discovery: deployments with minReplicas 0
        self._models: set[str] = set(configured)

    def observe(self) -> None:
        """After each discovery update: scale-to-zero models without endpoints are served as cold."""
        self._models = self.configured | (self.discovered() if self.discovered else set())
        present = {name for s in self.table for name in (s.endpoint.model, *s.endpoint.aliases)}
        self.table.cold = self._models - present

    def starting(self, model: str) -> bool:
        return model in self._models and not any(
            s.endpoint.ready and not s.endpoint.draining for s in self.table if s.endpoint.model == model)


def model_stats(table: EndpointTable) -> list[dict[str, Any]]:
    """Per served model: groups by state and the engines' own numbers (vLLM running / waiting / KV usage)."""
    by_model: dict[str, list[Any]] = {}
    for s in table:
        by_model.setdefault(s.endpoint.model, []).append(s)
    out = []
    for model, states in sorted(by_model.items()):
        ready = [s for s in states if s.endpoint.ready and s.healthy and not s.endpoint.draining]
        out.append({"model": model, "deployments": sorted({s.endpoint.deployment for s in states}),
                    "readyGroups": len(ready), "drainingGroups": sum(s.endpoint.draining for s in states),
                    "routerInFlight": sum(s.inflight for s in states),
                    "engineRunning": sum(s.stats.running for s in ready),
                    "engineWaiting": sum(s.stats.waiting for s in ready),
                    "kvCacheUsage": round(sum(s.stats.kv_usage for s in ready) / len(ready), 4) if ready else None,
                    "maxConcurrency": sum(s.endpoint.max_concurrency for s in ready)})
    return out


def draining_endpoints(table: EndpointTable) -> list[dict[str, Any]]:
    """Draining groups and what is still running on them (the operator deletes one once it is idle)."""
    return [{"deployment": s.endpoint.deployment, "pool": s.endpoint.pool, "group": s.endpoint.group,
             "url": s.endpoint.url,
             "inFlight": s.inflight, "engineRunning": s.stats.running, "engineWaiting": s.stats.waiting,
             "scraped": s.stats.scraped}
            for s in table if s.endpoint.draining]


def pool_capacity(table: EndpointTable) -> list[dict[str, Any]]:
    """Per deployment pool: the mean capacity weight of its routable groups (measured, else declared) — the
    operator's autoscaler grows the pool with the best capacity per group first."""
    by_pool: dict[tuple[str, str], list[float]] = {}
    for s in table:
        if s.endpoint.deployment and s.endpoint.ready and s.healthy and not s.endpoint.draining:
            by_pool.setdefault((s.endpoint.deployment, s.endpoint.pool), []).append(s.capacity)
    return [{"deployment": d, "pool": p, "groups": len(ws), "weight": round(sum(ws) / len(ws), 4)}
            for (d, p), ws in sorted(by_pool.items())]


def signals(gate: DemandGate, table: EndpointTable, wall: Callable[[], float] = time.time) -> dict[str, Any]:
    return {"time": wall(), "pools": gate.pools(), "models": model_stats(table), "draining": draining_endpoints(table),
            "capacity": pool_capacity(table)}


class DemandCollector(Collector):
    """Prometheus view of `DemandGate`, computed at scrape time (a pool that goes away leaves no series)."""

    def __init__(self, gate: DemandGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["model", "mode"]
        gauges = {
            "queued": GaugeMetricFamily("supernode_router_pool_queued_requests",
                                        "Requests waiting for admission, by requested pool", labels=labels),
            "queuedTokens": GaugeMetricFamily("supernode_router_pool_queued_tokens",
                                              "Prompt tokens of the waiting requests", labels=labels),
            "oldestWaitSeconds": GaugeMetricFamily("supernode_router_pool_oldest_wait_seconds",
                                                   "Wait of the oldest waiting request", labels=labels),
            "inFlight": GaugeMetricFamily("supernode_router_pool_inflight_requests",
                                          "Admitted requests in flight, by served pool", labels=labels),
        }
        counters = {
            "admittedTotal": CounterMetricFamily("supernode_router_pool_admitted",
                                                 "Admissions by requested pool", labels=labels),
            "spilledTotal": CounterMetricFamily("supernode_router_pool_spilled",
                                                "Admissions served by another pool (spill-over)", labels=labels),
            "noCapacityTotal": CounterMetricFamily("supernode_router_pool_no_capacity",
                                                   "Requests refused: no ready group serves the pool", labels=labels),
        }
        for row in self.gate.pools():
            values = [row["model"], row["mode"]]
            for key, gauge in gauges.items():
                gauge.add_metric(values, float(row[key]))
            for key, counter in counters.items():
                counter.add_metric(values, float(row[key]))
        yield from gauges.values()
        yield from counters.values()
