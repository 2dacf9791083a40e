"""Every error the router raises to a client, and their rendering in each API's own error shape (pure)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

Shape = Literal["openai", "anthropic"]


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


class InvalidRequest(RouterError):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param


class ModeNotOffered(InvalidRequest):
    """The model is served, but no deployment of it offers the requested mode (a permanent condition,
    unlike a 503 for a mode whose endpoints are merely not ready)."""

    code = "mode_not_offered"


class ModelNotFound(RouterError):
    status = 404
    code = "model_not_found"


class PayloadTooLarge(RouterError):
    status = 413
    code = "request_too_large"


class UpstreamError(RouterError):
    """Every endpoint tried failed before the first byte, or the stream broke."""

    status = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class StateUnavailable(RouterError):
    """The shared admission state (Redis) is unreachable and the tenant's policy is failClosed."""

    status = 503
    code = "state_unavailable"


class LedgerUnavailable(RouterError):
    """The shared usage ledger (PostgreSQL) is unreachable."""

    status = 503
    code = "ledger_unavailable"


class UpstreamRejected(RouterError):
    """An engine's 4xx, passed on: its status, and its OpenAI `code` / `param` when they are plain
    identifiers (vLLM sends a number as `code`; anything else becomes `upstream_rejected`)."""

    code = "upstream_rejected"

    def __init__(self, message: str, *, status: int, code: object = None, param: object = None):
        super().__init__(message)
        self.status = status
        if _identifier(code):
            self.code = str(code)
        self.param = str(param) if _identifier(param) else None


def _identifier(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.]{1,64}", value) is not None


class BadRequest(RouterError):
    """A bad admin API query (its body names the class: ``type: BadRequest``)."""

    status = 400
    code = "invalid_request"


_OPENAI_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(shape: Shape, status: int, message: str, *, code: str, param: str | None = None) -> dict[str, Any]:
    if shape == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_headers(err: RouterError) -> dict[str, str]:
    headers = dict(err.headers)
    if err.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(err.retry_after)))
    elif err.status in (429, 503):
        headers["retry-after"] = "1"
    return headers


def render(shape: Shape, err: RouterError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for an error in the given API's shape."""
    body = error_body(shape, err.status, err.message, code=err.code, param=getattr(err, "param", None))
    return err.status, body, error_headers(err)


def sse_error(shape: Shape, err: RouterError) -> bytes:
    """An in-stream error event, sent when a failure happens after the response started."""
    body = error_body(shape, err.status, err.message, code=err.code)
    if shape == "anthropic":
        return f"event: error\ndata: {json.dumps(body)}\n\n".encode()
    return f"data: {json.dumps(body)}\n\n".encode()
