"""Who may call the engine and how much they may send: the router token and the body size limit.

A pure ASGI middleware in front of the app's routes:
- with a token configured (``SUPERNODE_ENGINE_TOKEN``, set by the operator from a Secret and by
  ``supernode up``), every path but ``/health`` needs ``Authorization: Bearer <token>``: none → 401,
  a wrong one → 403 (constant-time comparison);
- a body larger than ``max_body_bytes`` → 413, checked on ``Content-Length`` before reading and on the
  bytes actually received (chunked bodies), so an oversized body is never buffered whole.
Errors use the OpenAI error shape.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supernode.api.constants import ENV_ENGINE_TOKEN
from supernode.engine.server.protocol import APIError

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # above the router's default (8 MiB): the router's limit binds first


@dataclass(frozen=True, slots=True)
class Guards:
    token: str | None = None  # None: no token required (local development without `supernode up`)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    open_paths: frozenset[str] = field(default_factory=lambda: frozenset({"/health"}))

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if self.token is not None and len(self.token) < 16:
            raise ValueError(f"{ENV_ENGINE_TOKEN}: the engine token must have at least 16 characters")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Guards:
        env = os.environ if environ is None else environ
        return cls(token=env.get(ENV_ENGINE_TOKEN) or None)


class BodyTooLarge(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes", code="request_too_large")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class GuardMiddleware:
    """Token check and body limit (see module doc). ``BodyTooLarge`` raised from ``receive`` is an
    ``APIError``, answered by the app's own error handler when a route was reading the body."""

    def __init__(self, app: ASGIApp, guards: Guards) -> None:
        self.app, self.guards = app, guards
        self._expected = f"Bearer {guards.token}".encode() if guards.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _refusal(self, scope: Scope) -> APIError | None:
        if self._expected is not None and scope["path"] not in self.guards.open_paths:
            got = _header(scope, b"authorization")
            if not got:
                return APIError(401, "missing engine token (Authorization: Bearer ...)", code="unauthorized")
            if not hmac.compare_digest(got.encode("latin-1"), self._expected):
                return APIError(403, "invalid engine token", code="forbidden")
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return APIError(400, "invalid Content-Length header", code="invalid_request")
            if size > self.guards.max_body_bytes:
                return BodyTooLarge(self.guards.max_body_bytes)
        return None

    def _counting(self, receive: Receive) -> Receive:
        limit, seen = self.guards.max_body_bytes, [0]

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted
