"""The router's operations routes: /health and /ready, /metrics and the autoscaling signals, on the ops
port's own app (no key) or, without an ops port, on the API port behind the admin key."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from supernode.router.admission.config import AdminConfig
from supernode.router.demand import SIGNALS_PATH
from supernode.router.demand import signals as demand_signals
from supernode.router.errors import RouterError
from supernode.router.pipeline import api_key
from supernode.router.request_path import error_response
from supernode.router.router_state import RouterState


def metrics_response(st: RouterState) -> Response:
    st.metrics.queue_length.set(st.gatekeeper.queue_length())
    for s in st.table:
        st.metrics.set_inflight(s.key, s.inflight)
        st.metrics.set_capacity(s.key, s.endpoint.model, s.capacity)
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def signals_response(st: RouterState) -> Response:
    return JSONResponse(demand_signals(st.demand, st.table))


def health_routes(app: FastAPI, st: RouterState) -> None:
    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/ready", include_in_schema=False)
    async def ready() -> Response:
        routable = [s.key for s in st.table if s.healthy and s.endpoint.ready and not s.endpoint.draining]
        body = {"ready": bool(routable), "endpoints": len(st.table), "routable": len(routable),
                "discovery_error": st.discovery.last_error}
        return JSONResponse(body, status_code=200 if routable else 503)


def ops_app(st: RouterState) -> FastAPI:
    """The ops port's app: /metrics, /autoscaling/signals, /health, /ready (no lifespan: the API app owns
    the state). Served apart from the public API so scrapes and the operator's autoscaler need no key and
    probes answer even when the API port is saturated."""
    ops = FastAPI(title="supernode router ops", docs_url=None, redoc_url=None, openapi_url=None)
    health_routes(ops, st)

    @ops.get("/metrics")
    async def prometheus() -> Response:
        return metrics_response(st)

    @ops.get(SIGNALS_PATH)
    async def autoscaling_signals() -> Response:
        return signals_response(st)

    return ops


def admin_ops_routes(app: FastAPI, state: RouterState) -> None:
    """/metrics and the autoscaling signals on the API port, behind the admin key (no ops port configured)."""
    from supernode.router.admin import make_admin_key_check

    admission = state.config.admission
    check = make_admin_key_check(admission.admin if admission else AdminConfig.model_validate({}))

    def admin_only(request: Request, respond: Callable[[RouterState], Response]) -> Response:
        try:
            check(api_key(request))
        except RouterError as e:
            return error_response("openai", e)
        return respond(state)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        return admin_only(request, metrics_response)

    @app.get(SIGNALS_PATH, include_in_schema=False)
    async def autoscaling_signals(request: Request) -> Response:
        return admin_only(request, signals_response)
