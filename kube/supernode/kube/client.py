"""A small async Kubernetes REST client: one aiohttp session, JSON in and out, errors as ApiError.

One method per RBAC verb (get, list, watch, create, update, patch, delete), each issuing exactly that
verb's HTTP request, so a caller's RBAC needs can be read off the methods it calls. The operator's
typed client (supernode.operator.kube) and router discovery (supernode.router.discovery.kube_client)
are thin views over this one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from supernode.kube.access import Access

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Resource:
    """A REST collection: group/version/plural, its kind, and an optional default label selector."""

    group: str
    version: str
    plural: str
    kind: str = ""
    namespaced: bool = True
    label_selector: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}" + (f"[{self.label_selector}]" if self.label_selector else "")


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}".replace(" : ", ": "))
        self.status, self.reason, self.message = status, reason, message


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)
"""What a call raises when the API server cannot be reached (besides ApiError for an API answer)."""


def _error(status: int, reason: str, body: bytes) -> ApiError:
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError
        return ApiError(status, str(data.get("reason") or reason), str(data.get("message") or ""))
    except ValueError:
        return ApiError(status, reason, body[:500].decode(errors="replace"))


class KubeRest:
    """Owns one aiohttp session (created lazily inside the running loop); `close()` it."""

    def __init__(self, access: Access, *, request_timeout_s: float = 30.0, connect_timeout_s: float = 5.0,
                 pool_limit: int = 64) -> None:
        self.access = access
        self.request_timeout_s, self.connect_timeout_s = request_timeout_s, connect_timeout_s
        self._pool_limit = pool_limit
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.access.ssl_context(), limit=self._pool_limit)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        token = self.access.token()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _call(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                    content_type: str = "application/json") -> Any:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s, sock_connect=self.connect_timeout_s)
        data = None if body is None else json.dumps(body).encode()
        async with self._http().request(method, self.access.url + path, data=data, params=params,
                                        headers=self._headers(content_type if data is not None else None),
                                        timeout=timeout) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise _error(resp.status, resp.reason or "", raw)
            return json.loads(raw) if raw else None

    @staticmethod
    def _selector(resource: Resource, selector: str | None) -> dict[str, str]:
        chosen = selector if selector is not None else resource.label_selector
        return {"labelSelector": chosen} if chosen else {}

    # --- one method per RBAC verb -----------------------------------------------------------------
    async def get(self, resource: Resource, namespace: str | None, name: str, *, sub: str | None = None) -> Any:
        return await self._call("GET", resource.path(namespace, name, sub))

    async def list(self, resource: Resource, namespace: str | None, *,
                   selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """LIST: (items, resourceVersion of the snapshot). Items get kind/apiVersion, which a real API
        server leaves out of list items."""
        data = await self._call("GET", resource.path(namespace), params=self._selector(resource, selector)) or {}
        items = list(data.get("items") or [])
        for item in items:
            if resource.kind:
                item.setdefault("kind", resource.kind)
            item.setdefault("apiVersion", resource.api_version)
        return items, str((data.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(self, resource: Resource, namespace: str | None, resource_version: str, timeout_s: float, *,
                    selector: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """WATCH from `resource_version` (bookmarks on) until the server ends the stream
        (`timeoutSeconds`) or it fails; yields the watch events."""
        params = {**self._selector(resource, selector), "watch": "true", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(max(1, int(timeout_s)))}
        # No total limit: a watch is long-lived; a socket silent for longer than the server's own
        # timeout plus slack means the connection is dead.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s, sock_read=timeout_s + 15)
        async with self._http().get(self.access.url + resource.path(namespace), params=params,
                                    headers=self._headers(), timeout=timeout) as resp:
            if resp.status != 200:
                raise _error(resp.status, resp.reason or "", await resp.read())
            buffer = b""
            async for chunk in resp.content.iter_any():  # manual framing: objects can exceed readline's limit
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)

    async def create(self, resource: Resource, namespace: str | None, body: dict[str, Any]) -> Any:
        return await self._call("POST", resource.path(namespace), body=body)

    async def update(self, resource: Resource, namespace: str | None, name: str, body: dict[str, Any]) -> Any:
        """PUT; with metadata.resourceVersion set, a concurrent writer makes it fail with 409."""
        return await self._call("PUT", resource.path(namespace, name), body=body)

    async def patch(self, resource: Resource, namespace: str | None, name: str, patch: dict[str, Any], *,
                    sub: str | None = None, content_type: str = MERGE_PATCH) -> Any:
        return await self._call("PATCH", resource.path(namespace, name, sub), body=patch, content_type=content_type)

    async def delete(self, resource: Resource, namespace: str | None, name: str, *,
                     propagation: str | None = None) -> Any:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation} if propagation else None
        return await self._call("DELETE", resource.path(namespace, name), body=body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
