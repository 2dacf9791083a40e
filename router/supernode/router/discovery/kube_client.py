"""A minimal async Kubernetes API client for discovery: LIST and WATCH (JSON lines), nothing else.

Connection settings come from `api_url` (explicit, e.g. tests or `kubectl proxy`), the in-cluster
service account, or kubeconfig (parsed by the official client, which handles exec plugins and
inline certificates). Every request the router makes goes through `KubeClient.list` / `.watch`, so
those method names are the RBAC verbs it needs (tests/helm/test_helm_rbac.py derives them from here).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")  # in-cluster token + CA


@dataclass(frozen=True)
class KubeResource:
    """One watched collection: group/version/plural plus an optional label selector."""

    group: str
    version: str
    plural: str
    label_selector: str | None = None

    def path(self, namespace: str | None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        return f"{base}/namespaces/{namespace}/{self.plural}" if namespace else f"{base}/{self.plural}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}" + (f"[{self.label_selector}]" if self.label_selector else "")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class KubeAccess:
    """Where the API is and how to authenticate; the bearer token is fetched per request (it rotates)."""

    url: str
    token: Callable[[], str | None] = lambda: None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.url.startswith("https"):
            return True
        if not self.verify:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _read_token(path: Path) -> Callable[[], str | None]:
    return lambda: path.read_text().strip() or None


def load_access(api_url: str | None = None) -> KubeAccess:
    """`api_url` as given, else the in-cluster service account, else kubeconfig ($KUBECONFIG / ~/.kube)."""
    if api_url:
        return KubeAccess(url=api_url.rstrip("/"))
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if host and port and (SA_DIR / "token").exists():
        host = f"[{host}]" if ":" in host else host
        return KubeAccess(url=f"https://{host}:{port}", token=_read_token(SA_DIR / "token"),
                          ca_file=str(SA_DIR / "ca.crt"))
    from kubernetes import client, config  # config loading only: the requests are ours

    cfg = client.Configuration()
    config.load_kube_config(client_configuration=cfg)

    def token() -> str | None:
        value = cfg.get_api_key_with_prefix("authorization")  # runs the exec-plugin refresh hook
        return value.removeprefix("Bearer ").strip() if value else None

    return KubeAccess(url=cfg.host.rstrip("/"), token=token, ca_file=cfg.ssl_ca_cert, cert_file=cfg.cert_file,
                      key_file=cfg.key_file, verify=bool(cfg.verify_ssl))


def _status_message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message") or body[:200].decode(errors="replace"))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


class KubeClient:
    """Owns one aiohttp session; `close()` it (KubernetesDiscovery does, when its task stops)."""

    def __init__(self, access: KubeAccess, *, connect_timeout_s: float = 5.0, request_timeout_s: float = 30.0):
        self.access = access
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.access.ssl_context()))
        return self._session

    def _headers(self) -> dict[str, str]:
        token = self.access.token()
        return {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

    def _params(self, resource: KubeResource, **extra: str) -> dict[str, str]:
        return {**({"labelSelector": resource.label_selector} if resource.label_selector else {}), **extra}

    async def list(self, resource: KubeResource, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """LIST: (items, resourceVersion of the snapshot)."""
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s, sock_connect=self.connect_timeout_s)
        async with self._http().get(self.access.url + resource.path(namespace), params=self._params(resource),
                                    headers=self._headers(), timeout=timeout) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise ApiError(resp.status, _status_message(body))
        data = json.loads(body)
        return list(data.get("items") or []), str((data.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(self, resource: KubeResource, namespace: str | None, resource_version: str,
                    timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """WATCH from `resource_version` until the server ends the stream (`timeoutSeconds`) or it fails."""
        params = self._params(resource, watch="true", resourceVersion=resource_version,
                              allowWatchBookmarks="true", timeoutSeconds=str(max(1, int(timeout_s))))
        # No total limit: a watch is long-lived; a silent socket for longer than the server's own
        # timeout plus slack means the connection is dead.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s, sock_read=timeout_s + 15)
        async with self._http().get(self.access.url + resource.path(namespace), params=params,
                                    headers=self._headers(), timeout=timeout) as resp:
            if resp.status != 200:
                raise ApiError(resp.status, _status_message(await resp.read()))
            buffer = b""
            async for chunk in resp.content.iter_any():  # manual framing: objects can exceed readline's limit
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
