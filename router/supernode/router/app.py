"""The router's FastAPI app. Everything stateful is built in the lifespan and lives on app.state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.router.admission.config import AdminConfig
from supernode.router.apis.anthropic import parse_messages
from supernode.router.apis.openai import parse_chat, parse_completion
from supernode.router.call import Call, request_id_from
from supernode.router.config import RouterConfig
from supernode.router.contracts import Gatekeeper, Meter
from supernode.router.demand import SIGNALS_PATH, ColdModels, DemandCollector, DemandGate
from supernode.router.demand import signals as demand_signals
from supernode.router.discovery.file import FileDiscovery
from supernode.router.discovery.kubernetes import KubernetesDiscovery
from supernode.router.errors import InvalidRequest, RouterError, Shape, error_body
from supernode.router.kv_events.feeds import KVEventFeeds
from supernode.router.metrics import RouterMetrics
from supernode.router.pipeline import Parser, api_key, prepare, read_body, session_of, spill_targets
from supernode.router.proxy import Upstream, backoff_of
from supernode.router.request_path import Service, error_response
from supernode.router.routing.profile import Profile, build_profile
from supernode.router.routing.state import EndpointState, EndpointTable
from supernode.router.stats import Scraper
from supernode.router.tokens.fetch import TokenizerFetcher
from supernode.router.tokens.service import PromptTokens
from supernode.router.tokens.wiring import build_tokens, load_local_tokenizers
from supernode.router.wiring import (
    GatekeeperFactory,
    MeterFactory,
    TableCapacity,
    keepalive_seconds,
    make_gatekeeper,
    make_meter,
)

log = logging.getLogger("supernode.router")

OFFLOAD_PARSE_BYTES = 256 * 1024  # larger bodies are parsed in a worker thread, off the event loop


@dataclass
class RouterState:
    config: RouterConfig
    table: EndpointTable
    profile: Profile
    metrics: RouterMetrics
    gatekeeper: Gatekeeper
    meter: Meter
    service: Service
    upstream: Upstream
    discovery: FileDiscovery | KubernetesDiscovery
    demand: DemandGate
    tokens: PromptTokens
    fetcher: TokenizerFetcher | None = None
    feeds: KVEventFeeds | None = None
    scraper: Scraper | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _build_discovery(config: RouterConfig, apply: Callable[[list[Endpoint]], None],
                     metrics: RouterMetrics) -> FileDiscovery | KubernetesDiscovery:
    d = config.discovery
    if d.type == "kubernetes":
        return KubernetesDiscovery(apply, namespace=d.namespace, port_name=d.http_port_name,
                                   default_port=d.default_port, default_max_concurrency=d.default_max_concurrency,
                                   api_url=d.api_url, resync_interval_s=d.resync_interval_s,
                                   watch_timeout_s=d.watch_timeout_s, debounce_s=d.debounce_s, metrics=metrics)
    assert d.path is not None
    return FileDiscovery(d.path, apply, d.poll_interval_s)


def create_app(config: RouterConfig, *, gatekeeper_factory: GatekeeperFactory | None = None,
               meter_factory: MeterFactory | None = None, routing_seed: int | None = None) -> FastAPI:
    """Objects are built here from the parsed config; the lifespan opens the HTTP client and owns the
    background tasks (discovery, health scraping, admission's own loops)."""
    metrics = RouterMetrics()
    profile = build_profile(config.routing, seed=routing_seed)
    def removed(key: str) -> None:
        profile.forget(key)
        metrics.forget_endpoint(key)

    def fenced(ep: Endpoint) -> None:
        metrics.ejections.labels("device-fault").inc()
        log.warning("endpoint %s (%s group %d) fenced by the operator: %s", ep.url, ep.deployment, ep.group, ep.fault)

    table = EndpointTable(on_removed=removed, on_fault=fenced)
    capacity = TableCapacity(table, config.admission.capacity if config.admission else None)
    meter = meter_factory(config) if meter_factory else make_meter(config, metrics.registry)
    gatekeeper = (gatekeeper_factory(config, capacity) if gatekeeper_factory
                  else make_gatekeeper(config, capacity, meter, metrics.registry))
    cold = ColdModels(table, config.cold_start.models)
    cold.observe()
    # The request path admits through it: autoscaling signals, and cold models' requests held (scale to zero).
    demand = DemandGate(gatekeeper, capacity=capacity, starting=cold.starting, hold_s=config.cold_start.hold_s,
                        poll_s=config.cold_start.poll_s)
    metrics.registry.register(DemandCollector(demand))

    tokens, fetcher = build_tokens(config, metrics.registry)  # the prompts' real token ids (router/tokens)

    def hash_seed(model: str) -> str:  # vLLM's blocks are re-hashed as the router hashes prompts
        tokenizer = tokens.get(model)
        return tokenizer.hash_seed if tokenizer is not None else model

    def block_size(model: str) -> int | None:  # engine blocks are cut into the router's (kv_events/reblock.py)
        tokenizer = tokens.get(model)
        return tokenizer.block_size if tokenizer is not None else None

    feeds = KVEventFeeds(table, profile.precise, metrics, config.routing.prefix, seed_of=hash_seed,
                         block_size_of=block_size)

    def apply(endpoints: list[Endpoint]) -> None:
        table.update(endpoints)
        cold.observe()
        feeds.sync()
        metrics.endpoints.set(len(table))
        if fetcher is not None:
            fetcher.observe(endpoints)

    discovery = _build_discovery(config, apply, metrics)
    cold.discovered = getattr(discovery, "scale_to_zero_models", None)
    h = config.health
    upstream = Upstream(None, table, profile, metrics, config.timeouts, h, config.routing.max_attempts,
                        config.routing.capacity)
    service = Service(config, demand, meter, upstream, metrics, keepalive_s=keepalive_seconds(config),
                      tokens=tokens)
    state = RouterState(config, table, profile, metrics, gatekeeper, meter, service, upstream, discovery, demand,
                        tokens, fetcher, feeds)

    def on_health(s: EndpointState) -> None:
        if table.get(s.key) is not s:  # probed while discovery dropped it: no series for a gone endpoint
            return
        metrics.set_endpoint(s.key, s.endpoint.model, healthy=s.healthy, load=s.stats.running + s.stats.waiting,
                             capacity=s.capacity)
        metrics.set_prefix_blocks(s.key, profile.precise.size(s.key))

    # Engines that require the shared router token (SUPERNODE_ENGINE_TOKEN) get it on every call.
    engine_token = os.environ.get(C.ENV_ENGINE_TOKEN)
    engine_headers = {"authorization": f"Bearer {engine_token}"} if engine_token else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await load_local_tokenizers(tokens, config)
        if isinstance(discovery, FileDiscovery):
            discovery.poll()  # serve with the current endpoints from the first request on
        # aiohttp for the proxied requests (a fraction of httpx's per-request CPU); httpx for the scraper
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=4096, limit_per_host=0, keepalive_timeout=30.0),
            cookie_jar=aiohttp.DummyCookieJar(), headers=engine_headers)
        upstream.client = session
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                                   timeout=httpx.Timeout(config.timeouts.total_s, connect=config.timeouts.connect_s),
                                   headers=engine_headers)
        state.tasks = [asyncio.create_task(discovery.run(), name="discovery")]
        feeds.start(session)  # KV events: one feed per endpoint, following discovery
        if fetcher is not None:
            state.tasks.append(asyncio.create_task(fetcher.run(session), name="tokenizers"))
        if h.scrape_interval_s > 0:
            state.scraper = Scraper(table, client, interval_s=h.scrape_interval_s, timeout_s=h.scrape_timeout_s,
                                    unhealthy_after=h.unhealthy_after, healthy_after=h.healthy_after,
                                    on_health=on_health, backoff=backoff_of(h),
                                    on_eject=lambda s: metrics.ejections.labels("probe").inc())
            state.tasks.append(asyncio.create_task(state.scraper.run(), name="scraper"))
        start = getattr(gatekeeper, "start", None)
        if start is not None:
            await start()
        try:
            yield
        finally:
            stop = getattr(gatekeeper, "stop", None)
            if stop is not None:
                await stop()
            for t in state.tasks:
                t.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            await feeds.close()
            await client.aclose()
            await session.close()
            tokens.close()
            meter.close()

    docs = config.server.docs
    app = FastAPI(title="supernode router", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.state.router = state
    app.state.ops_app = _ops_app(state)
    if config.admission is not None and config.metering is not None:
        from supernode.router.admin import make_admin_key_check, make_admin_router

        app.include_router(make_admin_router(meter, gatekeeper, make_admin_key_check(config.admission.admin)))  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        shape: Shape = "anthropic" if request.url.path.startswith("/v1/messages") else "openai"
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        return JSONResponse(error_body(shape, exc.status_code, str(exc.detail), code=code), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response("openai", InvalidRequest(str(exc.errors()[:1])))

    async def serve(request: Request, parser: Parser, shape: Shape) -> Response:
        st: RouterState = request.app.state.router
        rid = request_id_from(request.headers.get(C.HEADER_REQUEST_ID))
        try:
            tenant = st.gatekeeper.authenticate(api_key(request))
            raw = await read_body(request, config.server.max_body_bytes)
            args = (raw, parser)
            kw = {"anthropic": shape == "anthropic", "config": config, "table": st.table,
                  "session_header": session_of(request), "spill": spill_targets(st.gatekeeper, tenant)}
            if len(raw) > OFFLOAD_PARSE_BYTES:  # megabytes of JSON: let other requests run meanwhile
                prep = await asyncio.to_thread(prepare, *args, **kw)  # type: ignore[arg-type]
            else:
                prep = prepare(*args, **kw)  # type: ignore[arg-type]
            prep = await st.tokens.apply(prep)  # real token ids and count when the model's tokenizer is known
        except RouterError as e:
            st.metrics.requests.labels(model="", mode="", tenant="", code=str(e.status)).inc()
            if e.status in (401, 403, 413):
                st.metrics.rejections.labels(e.code).inc()
            return error_response(shape, e)
        return await st.service.handle(request, Call(rid, shape, tenant, prep))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, parse_chat, "openai")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await serve(request, parse_completion, "openai")

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        return await serve(request, parse_messages, "anthropic")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        st: RouterState = request.app.state.router
        try:
            st.gatekeeper.authenticate(api_key(request))
        except RouterError as e:
            return error_response("openai", e)
        served, served_aliases = st.table.served_models()
        names = set(served) | set(served_aliases)
        names |= {alias for alias, target in config.models.aliases.items() if target.model in served}
        now = int(time.time())
        data: list[dict[str, Any]] = [{"id": n, "object": "model", "created": now, "owned_by": "supernode"}
                                      for n in sorted(names)]
        return JSONResponse({"object": "list", "data": data})

    _health_routes(app, state)
    if config.server.metrics_port is None:  # no ops port: metrics + signals on the API port, for the admin only
        from supernode.router.admin import make_admin_key_check

        check = make_admin_key_check(config.admission.admin if config.admission else AdminConfig.model_validate({}))

        @app.get("/metrics", include_in_schema=False)
        async def prometheus(request: Request) -> Response:
            try:
                check(api_key(request))
            except RouterError as e:
                return error_response("openai", e)
            return _metrics(state)

        @app.get(SIGNALS_PATH, include_in_schema=False)
        async def autoscaling_signals(request: Request) -> Response:
            try:
                check(api_key(request))
            except RouterError as e:
                return error_response("openai", e)
            return _signals(state)

    return app


def _metrics(st: RouterState) -> Response:
    st.metrics.queue_length.set(st.gatekeeper.queue_length())
    for s in st.table:
        st.metrics.set_inflight(s.key, s.inflight)
        st.metrics.set_capacity(s.key, s.endpoint.model, s.capacity)
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _signals(st: RouterState) -> Response:
    return JSONResponse(demand_signals(st.demand, st.table))


def _health_routes(app: FastAPI, st: RouterState) -> None:
    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/ready", include_in_schema=False)
    async def ready() -> Response:
        routable = [s.key for s in st.table if s.healthy and s.endpoint.ready and not s.endpoint.draining]
        body = {"ready": bool(routable), "endpoints": len(st.table), "routable": len(routable),
                "discovery_error": st.discovery.last_error}
        return JSONResponse(body, status_code=200 if routable else 503)


def _ops_app(st: RouterState) -> FastAPI:
    """The ops port's app: /metrics, /autoscaling/signals, /health, /ready (no lifespan: the API app owns
    the state). Served apart from the public API so scrapes and the operator's autoscaler need no key and
    probes answer even when the API port is saturated."""
    ops = FastAPI(title="supernode router ops", docs_url=None, redoc_url=None, openapi_url=None)
    _health_routes(ops, st)

    @ops.get("/metrics")
    async def prometheus() -> Response:
        return _metrics(st)

    @ops.get(SIGNALS_PATH)
    async def autoscaling_signals() -> Response:
        return _signals(st)

    return ops
