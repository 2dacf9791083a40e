"""One request's bookkeeping: what it asked, what served it, usage, outcome; its record and metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.router.contracts import Status, Tenant, Ticket, Usage, UsageRecord
from supernode.router.errors import Shape
from supernode.router.metrics import RouterMetrics
from supernode.router.pipeline import Prepared
from supernode.router.proxy import Opened

log = logging.getLogger("supernode.router.requests")

# A client's x-request-id is echoed and logged, so it is bounded and plain; anything else is replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:20]}"


def request_id_from(header: str | None) -> str:
    """The client's x-request-id when it is 1-128 characters of [A-Za-z0-9._:-], else a new one. It
    only labels the request (logs, the ledger's request_id column): never trusted as unique."""
    return header if header and _REQUEST_ID.fullmatch(header) else new_request_id()


def endpoint_name(ep: Endpoint) -> str:
    """How responses name the group that served: deployment/group (deployment/pool/group in a deployment
    with spec.pools), never its address."""
    pool = f"/{ep.pool}" if ep.pool else ""
    return f"{ep.deployment or ep.model}{pool}/{ep.group}"


@dataclass
class Call:
    """One request's bookkeeping, shared by the streaming and non-streaming paths."""

    request_id: str
    shape: Shape
    tenant: Tenant
    prep: Prepared
    key: str = field(default_factory=lambda: f"led_{uuid.uuid4().hex}")  # the ledger's key, ours alone
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
    usage_final: bool = False  # the engine reported usage (else: what was delivered, counted)
    delivered_tokens: int = 0  # completion tokens sent to the client so far (streaming)

    def delivered_usage(self) -> Usage:
        """Usage of a request that ended without the engine's final count (client gone, upstream
        failed mid-stream): the prompt estimate once an engine accepted it, plus the completion
        tokens delivered so far."""
        if self.usage_final or self.opened is None or self.opened.status != 200:
            return self.usage
        prompt = max(self.usage.prompt_tokens, self.prep.prompt_tokens_estimate)
        completion = max(self.usage.completion_tokens, self.delivered_tokens)
        return Usage(prompt_tokens=prompt, cached_tokens=self.usage.cached_tokens, completion_tokens=completion,
                     reasoning_tokens=self.usage.reasoning_tokens)

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
        headers[C.HEADER_ENDPOINT] = endpoint_name(call.opened.state.endpoint)
    return headers


def usage_record(call: Call, status: Status | None = None) -> UsageRecord:
    pool = call.ticket.pool if call.ticket else call.prep.pools[0]
    return UsageRecord(key=call.key,
        request_id=call.request_id, tenant=call.tenant.id, api=call.prep.parsed.api,
        model=call.prep.resolved.model, mode=call.prep.resolved.mode, served_model=pool.model,
        served_mode=pool.mode, endpoint=endpoint_name(call.opened.state.endpoint) if call.opened else "",
        usage=call.usage if status != "open" else Usage(prompt_tokens=call.prep.prompt_tokens_estimate,
                                                        completion_tokens=call.delivered_tokens),
        status=status or call.status, started_at=call.started, finished_at=time.time(),  # type: ignore[arg-type]
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
            "endpoint": endpoint_name(call.opened.state.endpoint) if call.opened else None,
            "attempts": call.opened.attempts if call.opened else 0, "stream": call.prep.parsed.stream,
            "duration_s": round(elapsed, 6), "prompt_tokens": u.prompt_tokens, "cached_tokens": u.cached_tokens,
            "completion_tokens": u.completion_tokens, "error": call.error or None}))
