"""The admin API: usage export and tenants, behind the admin key.

``GET /admin/usage?tenant=&from=&to=&format=json|csv&view=totals|rows&limit=``,
``GET /admin/tenants`` (no secrets), ``POST /admin/tenants/reload``.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import io
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from supernode.router.admission.config import AdminConfig
from supernode.router.admission.tenants import TenantsFileError, hash_key
from supernode.router.errors import AuthError, BadRequest, ForbiddenError, RouterError
from supernode.router.metering.ledger import COLUMNS, SUMS, TOTAL_KEYS

log = logging.getLogger("supernode.router.admin")

MAX_UNIX_SECONDS = 253402300799.0  # 9999-12-31T23:59:59Z
FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula

AdminKeyCheck = Callable[[str | None], None]  # raises AuthError (no key) / ForbiddenError (wrong key)


class UsageSource(Protocol):
    def rows(self, **kw: Any) -> list[dict[str, Any]]: ...
    def totals(self, **kw: Any) -> list[dict[str, Any]]: ...


class TenantAdmin(Protocol):
    def tenants(self) -> list[dict[str, Any]]: ...
    def reload_tenants(self) -> bool: ...


def make_admin_key_check(config: AdminConfig, environ: dict[str, str] | None = None) -> AdminKeyCheck:
    digest = config.resolve_digest(environ)
    if digest is None:
        log.warning("admin API disabled: set admission.admin.key_sha256 or the %s env var", config.key_env)

    def check(key: str | None) -> None:
        if digest is None:
            raise ForbiddenError("admin API disabled: no admin key configured")
        if not key:
            raise AuthError("missing admin key")
        if not hmac.compare_digest(hash_key(key), digest):
            raise ForbiddenError("not an admin key")

    return check


def _key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def _error(exc: RouterError) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["retry-after"] = str(int(exc.retry_after))
    body = {"error": {"message": exc.message, "type": type(exc).__name__, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def parse_time(value: str | None, field: str) -> float | None:
    """Unix seconds or ISO 8601 (naive = UTC); nan, inf and out-of-range values are a BadRequest."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or abs(seconds) > MAX_UNIX_SECONDS:
            raise BadRequest(f"{field}: expected finite unix seconds, got {value!r}")
        return seconds
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{field}: expected unix seconds or ISO 8601, got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):
        raise BadRequest(f"{field}: time out of range: {value!r}") from None


def neutralise(value: Any) -> Any:
    """A text cell that a spreadsheet would take for a formula gets a leading apostrophe (numbers are
    left alone: they are written by us, a tenant controls only text such as request ids)."""
    if isinstance(value, str) and value.startswith(FORMULA_LEAD):
        return "'" + value
    return value


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({k: neutralise(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def make_admin_router(meter: UsageSource, gatekeeper: TenantAdmin, admin_key_check: AdminKeyCheck) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"])

    def authorize(request: Request) -> JSONResponse | None:
        try:
            admin_key_check(_key(request))
        except RouterError as exc:
            return _error(exc)
        return None

    @router.get("/usage", response_model=None)
    async def usage(
        request: Request,
        tenant: str | None = None,
        from_: str | None = Query(None, alias="from"),
        to: str | None = None,
        format: Literal["json", "csv"] = "json",
        view: Literal["totals", "rows"] = "totals",
        limit: int = Query(10000, ge=1, le=1_000_000),
    ) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        try:
            start, end = parse_time(from_, "from"), parse_time(to, "to")
        except BadRequest as exc:
            return _error(exc)
        span = {"tenant": tenant, "start": start, "end": end}
        try:  # a shared ledger that is unreachable raises a RouterError (503), never a 500
            totals = await asyncio.to_thread(meter.totals, **span)
            if format == "csv":
                if view == "rows":
                    rows = await asyncio.to_thread(meter.rows, **span, limit=limit)
                    return Response(_csv(rows, COLUMNS), media_type="text/csv")
                return Response(_csv(totals, (*TOTAL_KEYS, "requests", "errors", *SUMS)), media_type="text/csv")
            body: dict[str, Any] = {"tenant": tenant, "from": start, "to": end, "totals": totals}
            if view == "rows":
                body["rows"] = await asyncio.to_thread(meter.rows, **span, limit=limit)
        except RouterError as exc:
            return _error(exc)
        return JSONResponse(body)

    @router.get("/tenants", response_model=None)
    async def tenants(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        return JSONResponse({"tenants": gatekeeper.tenants()})

    @router.post("/tenants/reload", response_model=None)
    async def reload(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        try:
            changed = gatekeeper.reload_tenants()
        except TenantsFileError as exc:
            return _error(BadRequest(f"tenants file rejected, previous tenants kept: {exc}"))
        return JSONResponse({"reloaded": changed, "tenants": len(gatekeeper.tenants())})

    return router
