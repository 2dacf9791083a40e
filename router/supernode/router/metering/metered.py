"""``Meter`` = the ledger plus Prometheus token/request counters (on a registry the caller owns)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter

from supernode.router.contracts import UsageRecord
from supernode.router.metering.ledger import SqliteLedger


class MeteredLedger:
    def __init__(self, ledger: SqliteLedger, registry: CollectorRegistry | None = None) -> None:
        self.ledger = ledger
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tokens = Counter(
            "supernode_router_metered_tokens_total",
            "Tokens metered into the ledger, by tenant, served model/mode and kind",
            ["tenant", "model", "mode", "kind"],
            registry=self.registry,
        )
        self.requests = Counter(
            "supernode_router_metered_requests_total",
            "Requests metered into the ledger, by tenant, served model/mode and status",
            ["tenant", "model", "mode", "status"],
            registry=self.registry,
        )

    def open(self, record: UsageRecord) -> None:
        self.ledger.open(record)  # counted in metrics only when finalised

    def progress(self, record: UsageRecord) -> None:
        self.ledger.progress(record)

    def record(self, record: UsageRecord) -> None:
        self.ledger.record(record)  # durable first; metrics only count what was committed
        labels = (record.tenant, record.served_model, record.served_mode.value)
        u = record.usage
        kinds = {
            "prompt_miss": u.prompt_tokens - u.cached_tokens,  # cache hits and misses are priced apart
            "prompt_hit": u.cached_tokens,
            "completion": u.completion_tokens,
            "reasoning": u.reasoning_tokens,  # a part of completion, not in addition to it
        }
        for kind, n in kinds.items():
            if n > 0:
                self.tokens.labels(*labels, kind).inc(n)
        self.requests.labels(*labels, record.status).inc()

    def close(self) -> None:
        self.ledger.close()

    # queries, delegated (the admin API and quotas use them)
    def rows(self, **kw: Any) -> list[dict[str, Any]]:
        return self.ledger.rows(**kw)

    def totals(self, **kw: Any) -> list[dict[str, Any]]:
        return self.ledger.totals(**kw)

    def tokens_by_tenant(self, since: float) -> dict[str, int]:
        return self.ledger.tokens_by_tenant(since)
