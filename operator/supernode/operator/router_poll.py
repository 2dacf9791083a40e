"""Reading the router replicas' `/autoscaling/signals` (or, for the autoscaler, a Prometheus scraping them).

Shared by the autoscaler (scaler.py: demand per deployment) and the drain watch (drain_watch.py: which
draining groups every router reports idle). The router replicas are found through a Service (its
selector picks the ready router pods) in `router_namespace`, or given as fixed `router_urls`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from supernode.operator import demand
from supernode.operator import naming as N
from supernode.operator import promsource as P
from supernode.operator.kube import PODS, SERVICES, ApiError, KubeClient


class RouterLocation(Protocol):
    """Where the routers are (AutoscalerConfig, DrainWatchConfig)."""

    @property
    def router_namespace(self) -> str: ...
    @property
    def router_service(self) -> str: ...
    @property
    def router_ops_port(self) -> int: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def router_urls(self) -> tuple[str, ...]: ...


class RouterPoll:
    """One HTTP session; `poll` asks every ready router replica at once."""

    def __init__(self, client: KubeClient, where: RouterLocation) -> None:
        self.client, self.where = client, where
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def urls(self) -> list[str]:
        if self.where.router_urls:
            return list(self.where.router_urls)
        ns = self.where.router_namespace
        services = await self.client.list_children(SERVICES, ns, "")
        service = next((s for s in services if s["metadata"]["name"] == self.where.router_service), None)
        if service is None:
            return []
        selector = N.selector_string((service.get("spec") or {}).get("selector") or {})
        pods = await self.client.list_children(PODS, ns, selector) if selector else []
        return demand.router_urls(service, pods, self.where.router_ops_port)

    async def fetch(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.where.timeout_seconds))
        async with self._http.get(url, params=params) as resp:
            if resp.status >= 400 and params is not None:  # Prometheus explains a refused query in its JSON body
                try:
                    error = await resp.json(content_type=None)
                except ValueError:
                    error = None
                if isinstance(error, dict) and error.get("error"):
                    raise P.PrometheusAnswerError(f"HTTP {resp.status}: {error.get('errorType', '')} {error['error']}")
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
            return body

    async def routers(self) -> tuple[dict[str, dict[str, Any]], str]:
        """Every router's answer (URL → JSON) and "" — or what went wrong (a router that does not answer makes
        the whole poll missing data: its requests could be anywhere)."""
        answers: dict[str, dict[str, Any]] = {}
        error = ""
        try:
            urls = await self.urls()
            if not urls:
                error = f"no ready router pods behind Service {self.where.router_namespace}/{self.where.router_service}"
            results = await asyncio.gather(*(self.fetch(u) for u in urls), return_exceptions=True)
            for url, result in zip(urls, results, strict=True):
                if isinstance(result, BaseException):
                    error = error or f"router {url}: {type(result).__name__}: {result}"
                else:
                    answers[url] = result
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as e:
            error = f"listing router pods: {e}"
        return answers, error

    async def prometheus(self, base: str, selector: str) -> tuple[dict[str, dict[str, Any]], str]:
        """The routers' series from Prometheus, combined over replicas, as one router answer; or the error."""
        requests = [P.query_url(base, f, selector) for f in P.QUERIES]
        results = await asyncio.gather(*(self.fetch(u, q) for u, q in requests), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                return {}, f"prometheus {base}: {type(result).__name__}: {result}"
        try:
            return P.answers_from(dict(zip(P.QUERIES, results, strict=True))), ""
        except P.PrometheusAnswerError as e:
            return {}, f"prometheus {base}: {e}"
