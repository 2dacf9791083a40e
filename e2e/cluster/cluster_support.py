"""Helpers for the real-cluster suite: find and reach the cluster, poll, port-forward a Service.

Imported by e2e/cluster/conftest.py and the test files (conftest puts this folder on sys.path)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
SAFE_CONTEXT = re.compile(r"^(kind|k3d)-")  # disposable local clusters


@dataclass
class Cluster:
    kubeconfig: Path
    context: str
    api: Any  # kubernetes.client.ApiClient

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def rbac(self) -> Any:
        from kubernetes import client

        return client.RbacAuthorizationV1Api(self.api)

    def extensions(self) -> Any:
        from kubernetes import client

        return client.ApiextensionsV1Api(self.api)

    def policy(self) -> Any:
        from kubernetes import client

        return client.PolicyV1Api(self.api)


def kubeconfig_from_env() -> tuple[Path | None, bool]:
    """(path, explicit): SUPERNODE_E2E_KUBECONFIG (explicit) or the first file in KUBECONFIG."""
    explicit = os.environ.get("SUPERNODE_E2E_KUBECONFIG")
    if explicit:
        return Path(explicit), True
    general = os.environ.get("KUBECONFIG", "")
    first = next((p for p in general.split(os.pathsep) if p), None)
    return (Path(first), False) if first else (None, False)


def connect(path: Path, *, explicit: bool) -> Cluster | str:
    """A reachable cluster, or the reason it is not usable (the suite skips with it)."""
    if not path.is_file():
        return f"kubeconfig {path} does not exist"
    try:
        from kubernetes import client, config
    except ImportError:  # pragma: no cover - kubernetes is a base dependency
        return "the kubernetes client is not installed"
    try:
        _, active = config.list_kube_config_contexts(config_file=str(path))
        context = active["name"]
        api = config.new_client_from_config(config_file=str(path))
    except Exception as exc:
        return f"kubeconfig {path} is not usable: {exc}"
    if not explicit and not SAFE_CONTEXT.match(context) and os.environ.get("SUPERNODE_E2E_ALLOW_ANY_CLUSTER") != "1":
        return (f"KUBECONFIG context {context!r} is not a kind-/k3d- cluster; the suite installs and deletes "
                "things, so set SUPERNODE_E2E_KUBECONFIG (or SUPERNODE_E2E_ALLOW_ANY_CLUSTER=1) to use it")
    try:
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:
        return f"cluster {context!r} from {path} is not reachable: {exc}"
    return Cluster(kubeconfig=path, context=context, api=api)


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float, interval: float = 2.0) -> T:
    """Poll until probe() returns something truthy; fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@contextlib.contextmanager
def port_forward(cluster: Cluster, namespace: str, service: str, port: int) -> Iterator[str]:
    """`kubectl port-forward svc/NAME :PORT` on 127.0.0.1; yields the local base URL."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed for port-forwarding (see e2e/cluster/README.md)"
    proc = subprocess.Popen(
        [kubectl, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "port-forward",
         "--address", "127.0.0.1", f"svc/{service}", f":{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        local = None
        while local is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if match:
                local = int(match.group(1))
        assert local, f"kubectl port-forward to svc/{service} did not start (exit {proc.poll()})"
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
