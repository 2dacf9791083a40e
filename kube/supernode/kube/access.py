"""Where the Kubernetes API is and how to authenticate: explicit URL, service account, or kubeconfig.

The bearer token is a function called per request: the kubelet rotates projected service-account
tokens, and kubeconfig exec plugins refresh theirs, so a token read once at start goes stale.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")  # in-cluster token + CA


def _no_token() -> str | None:
    return None


@dataclass(frozen=True)
class Access:
    url: str  # API server base URL, no trailing slash
    token: Callable[[], str | None] = _no_token
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


def load_access(api_url: str | None = None, *, context: str | None = None) -> Access:
    """`api_url` as given (tests, `kubectl proxy`), else the in-cluster service account, else
    kubeconfig ($KUBECONFIG / ~/.kube/config, `context` or its current one)."""
    if api_url:
        return Access(url=api_url.rstrip("/"))
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if host and port and (SA_DIR / "token").exists():
        host = f"[{host}]" if ":" in host else host
        return Access(url=f"https://{host}:{port}", token=_read_token(SA_DIR / "token"),
                      ca_file=str(SA_DIR / "ca.crt"))
    from kubernetes import client, config  # kubeconfig parsing only (exec plugins, inline certs): requests are ours

    cfg = client.Configuration()
    config.load_kube_config(context=context, client_configuration=cfg)

    def token() -> str | None:
        value = cfg.get_api_key_with_prefix("authorization")  # runs the exec-plugin refresh hook
        return value.removeprefix("Bearer ").strip() if value else None

    return Access(url=cfg.host.rstrip("/"), token=token, ca_file=cfg.ssl_ca_cert, cert_file=cfg.cert_file,
                  key_file=cfg.key_file, verify=bool(cfg.verify_ssl))
