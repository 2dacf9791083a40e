"""Contracts between the router's request path (app, routing, proxy) and its admission/metering side.

The request path (supernode.router.app) does: authenticate → parse → resolve model+mode →
candidate pools (primary, then spill-over) → ``Gatekeeper.admit`` (may queue; may reject) →
route + proxy → ``Ticket.release`` → ``Meter.record`` (durable before the last byte is sent).

The admission side (supernode.router.admission, supernode.router.metering) implements these
protocols; the request path only depends on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from supernode.api.models import Mode

ApiKind = Literal["openai-chat", "openai-completions", "anthropic-messages"]


@dataclass(frozen=True, slots=True)
class PoolKey:
    """The set of endpoints serving one model in one mode."""

    model: str
    mode: Mode


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    tier: str = "standard"
    priority: int = 1  # lower number = served first (0 = highest tier)
    allowed_models: tuple[str, ...] = ()  # empty = all
    allowed_modes: tuple[Mode, ...] = ()  # empty = all


ANONYMOUS = Tenant(id="anonymous", tier="standard", priority=1)


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    api: ApiKind
    tenant: Tenant
    model: str  # model the client asked for, after alias resolution
    mode: Mode  # mode the client asked for
    stream: bool
    prompt_tokens_estimate: int
    max_tokens: int
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    tenant: str
    api: ApiKind
    model: str  # requested (after alias resolution)
    mode: Mode  # requested
    served_model: str  # after spill-over
    served_mode: Mode
    endpoint: str
    usage: Usage
    status: Literal["ok", "error", "cancelled"]
    started_at: float  # unix seconds
    finished_at: float
    error: str = ""
    queued_seconds: float = 0.0


class RouterError(Exception):
    """An error the request path turns into the API's own error shape."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, retry_after: float | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class AuthError(RouterError):
    status = 401
    code = "invalid_api_key"


class ForbiddenError(RouterError):
    status = 403
    code = "permission_denied"


class AdmissionRejected(RouterError):
    """Over a limit (rate, tokens, quota, concurrency) or the queue wait would exceed its bound."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after, headers={"x-ratelimit-limit-name": limit})
        self.limit = limit


class NoCapacity(RouterError):
    """No ready endpoint serves any candidate pool."""

    status = 503
    code = "no_capacity"


class PoolCapacity(Protocol):
    """Provided by the request path from discovery: what each pool can take right now."""

    def capacity(self, pool: PoolKey) -> int:
        """Admitted concurrency: sum over ready, non-draining endpoints of their max concurrency,
        reduced when the owning deployment reports CapacityLimited. 0 = pool has no endpoint."""
        ...


class Ticket(Protocol):
    pool: PoolKey  # the pool admitted to (may differ from the first candidate: spill-over)
    queued_seconds: float

    def release(self, usage: Usage) -> None:
        """Free the concurrency slot and settle token accounting with the real usage."""
        ...


class Gatekeeper(Protocol):
    def authenticate(self, api_key: str | None) -> Tenant:
        """Map an API key to a tenant; raise AuthError. With no tenants configured: ANONYMOUS."""
        ...

    async def admit(self, ctx: RequestContext, pools: Sequence[PoolKey]) -> Ticket:
        """Admit to the first candidate pool with room (spill-over order), waiting in the fair
        priority queue when all are full; raise AdmissionRejected / NoCapacity / ForbiddenError."""
        ...

    def queue_length(self) -> int: ...


class Meter(Protocol):
    def record(self, record: UsageRecord) -> None:
        """Durably store one usage record (committed before this returns)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SpillRule:
    """When ``source`` is saturated, try ``target`` (e.g. Think Max → Think High, Pro → Flash)."""

    source: PoolKey
    targets: tuple[PoolKey, ...] = field(default_factory=tuple)
