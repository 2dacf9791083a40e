"""One request's bookkeeping: what it asked, what served it, usage, outcome; its record and metrics."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from supernode.api import constants as C
from supernode.router.contracts import Tenant, Ticket, Usage, UsageRecord
from supernode.router.errors import Shape
from supernode.router.metrics import RouterMetrics
from supernode.router.pipeline import Prepared
from supernode.router.proxy import Opened

log = logging.getLogger("supernode.router.requests")


@dataclass
class Call:
    """One request's bookkeeping, shared by the streaming and non-streaming paths."""

    request_id: str
    shape: Shape
    tenant: Tenant
    prep: Prepared
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    ticket: Ticket | None = None
    opened: Opened | None = None
    usage: Usage = field(default_factory=Usage)
    status: str = "ok"
    error: str = ""
    code: int = 200
    first_token_at: float | None = None
    metered: bool = False
    finished: bool = False

    @property
    def labels(self) -> dict[str, str]:
        """Counter labels; histograms take `hist_labels` (no tenant)."""
        return {**self.hist_labels, "tenant": self.tenant.id}

    @property
    def hist_labels(self) -> dict[str, str]:
        return {"model": self.prep.resolved.model, "mode": self.prep.resolved.mode.value}


def call_headers(call: Call) -> dict[str, str]:
    headers = {C.HEADER_REQUEST_ID: call.request_id}
    if call.ticket is not None:
        headers[C.HEADER_SERVED_MODEL] = call.ticket.pool.model
        headers[C.HEADER_SERVED_MODE] = call.ticket.pool.mode.value
    if call.opened is not None:
        headers[C.HEADER_ENDPOINT] = call.opened.state.key
    return headers


def usage_record(call: Call) -> UsageRecord:
    pool = call.ticket.pool if call.ticket else call.prep.pools[0]
    return UsageRecord(
        request_id=call.request_id, tenant=call.tenant.id, api=call.prep.parsed.api,
        model=call.prep.resolved.model, mode=call.prep.resolved.mode, served_model=pool.model,
        served_mode=pool.mode, endpoint=call.opened.state.key if call.opened else "", usage=call.usage,
        status=call.status, started_at=call.started, finished_at=time.time(),  # type: ignore[arg-type]
        error=call.error, queued_seconds=call.ticket.queued_seconds if call.ticket else 0.0)


def observe(call: Call, m: RouterMetrics, *, log_requests: bool) -> None:
    lb = call.labels
    m.requests.labels(**lb, code=str(call.code)).inc()
    elapsed = time.perf_counter() - call.t0
    m.e2e.labels(**call.hist_labels).observe(elapsed)
    if call.first_token_at is not None:
        m.ttft.labels(**call.hist_labels).observe(call.first_token_at - call.t0)
    u = call.usage
    for kind, n in (("prompt", u.prompt_tokens), ("cached", u.cached_tokens),
                    ("completion", u.completion_tokens), ("reasoning", u.reasoning_tokens)):
        if n:
            m.tokens.labels(**lb, kind=kind).inc(n)
    if log_requests:
        log.info(json.dumps({
            "event": "request", "request_id": call.request_id, "api": call.prep.parsed.api,
            "tenant": call.tenant.id, "model": lb["model"], "mode": lb["mode"], "code": call.code,
            "served": call.ticket.pool.model if call.ticket else None,
            "endpoint": call.opened.state.key if call.opened else None,
            "attempts": call.opened.attempts if call.opened else 0, "stream": call.prep.parsed.stream,
            "duration_s": round(elapsed, 6), "prompt_tokens": u.prompt_tokens, "cached_tokens": u.cached_tokens,
            "completion_tokens": u.completion_tokens, "error": call.error or None}))
