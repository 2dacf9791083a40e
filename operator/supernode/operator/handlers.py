"""Thin kopf handlers: indices for inventory, one reconcile entry point, settings in one startup hook.

No module-global registry: `build_registry(config)` returns a fresh `kopf.OperatorRegistry`, so tests
and the CLI each get their own. `kopf run -m supernode.operator.kopf_main` uses the default one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from supernode.api import constants as C
from supernode.operator.kube import ApiError, KubeClient, load_connection
from supernode.operator.metrics import OperatorMetrics
from supernode.operator.reconcile import Reconciler
from supernode.operator.scaler import Autoscaler, AutoscalerConfig

log = logging.getLogger("supernode.operator")


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    server: str | None = None  # explicit API URL (tests, `kubectl proxy`); else in-cluster / kubeconfig
    context: str | None = None  # kubeconfig context
    resync_seconds: float = 10.0  # timer: gang health, drain timeouts, drift
    supernode_label: str | None = None  # operator-wide Ascend SuperPoD node label key
    fast: bool = False  # short watch/retry timings (tests, benchmarks)
    metrics_port: int | None = None  # serve Prometheus metrics on this port (None: off)
    metrics_addr: str = "0.0.0.0"
    # Metrics owned (and served) by the caller, e.g. from process start under --leader-elect; then
    # metrics_port must be None so the port is bound once per process.
    metrics: OperatorMetrics | None = None
    autoscaler: AutoscalerConfig | None = None  # spec.autoscaling takes effect (None: not run)

    def __post_init__(self) -> None:
        if self.metrics is not None and self.metrics_port is not None:
            raise ValueError("OperatorConfig: metrics_port with caller-owned metrics would bind the port twice")


def _slim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status", {})
    return {
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "labels", "annotations", "ownerReferences")},
        "spec": {"nodeName": spec.get("nodeName"),
                 "containers": [{"name": c.get("name"), "resources": c.get("resources", {})}
                                for c in spec.get("containers") or []],
                 "initContainers": [{"name": c.get("name"), "resources": c.get("resources", {})}
                                    for c in spec.get("initContainers") or []]},
        "status": {k: status.get(k) for k in ("phase", "reason", "conditions", "containerStatuses")},
    }


def _all(index: Mapping[Any, Iterable[Any]]) -> list[Any]:
    return [value for store in index.values() for value in store]


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    md = (C.GROUP, C.VERSION, C.PLURAL)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo | None:
        if config.server:
            return kopf.ConnectionInfo(server=config.server)
        conn = load_connection(None, config.context)
        return kopf.ConnectionInfo(server=conn.server, token=conn.token, ca_path=conn.ca_file,
                                   certificate_path=conn.cert_file, private_key_path=conn.key_file,
                                   insecure=conn.insecure)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.posting.enabled = False  # our Events are explicit; kopf's per-handler ones are noise
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=C.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=C.GROUP)
        settings.persistence.finalizer = C.FINALIZER
        if config.fast:
            settings.watching.server_timeout = 10
            settings.watching.client_timeout = 15
            settings.watching.reconnect_backoff = 0.1
            settings.batching.idle_timeout = 0.05
            settings.batching.batch_window = 0.01
            settings.queueing.exit_timeout = 1
            settings.process.ultimate_exiting_timeout = 2
            settings.background.instant_exit_timeout = 0.5
            settings.background.cancellation_polling = 0.2
        memo.stopping = asyncio.Event()
        if config.metrics is not None:
            memo.metrics, memo.owns_metrics = config.metrics, False
        else:
            memo.metrics, memo.owns_metrics = OperatorMetrics(), True
            memo.metrics.set_leader(True)  # no election: this process is the operator
            if config.metrics_port is not None:
                memo.metrics.serve(config.metrics_port, config.metrics_addr)
        memo.reconciler = Reconciler(KubeClient(load_connection(config.server, config.context)),
                                     supernode_label=config.supernode_label)
        memo.autoscaler = None if config.autoscaler is None else Autoscaler(
            memo.reconciler.client, config.autoscaler, supernode_label=config.supernode_label,
            registry=memo.metrics.registry, lws=memo.reconciler.lws_installed)

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        reconciler = getattr(memo, "reconciler", None)
        memo.stopping.set()  # timers may still fire while kopf winds down: they return at once
        autoscaler: Autoscaler | None = getattr(memo, "autoscaler", None)
        if autoscaler is not None:
            await autoscaler.close()
        if reconciler is not None:
            await reconciler.client.close()
        metrics: OperatorMetrics | None = getattr(memo, "metrics", None)
        if metrics is not None and getattr(memo, "owns_metrics", True):
            metrics.stop()

    @kopf.index("nodes", id="nodes_idx", registry=registry)
    def nodes_idx(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: {"metadata": {"name": name, "labels": dict(body.metadata.labels)},
                       "spec": dict(body.spec), "status": {k: body.status.get(k) for k in (
                           "allocatable", "capacity", "conditions")}}}

    @kopf.index("pods", id="pods_idx", registry=registry)
    def pods_idx(namespace: str | None, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        key = (namespace or "", body.metadata.labels.get(C.LABEL_DEPLOYMENT, ""))
        return {key: _slim_pod(body)}

    async def reconcile(**kwargs: Any) -> None:
        # kopf passes kwargs by name: body, memo and the two indices (named after their functions).
        body: kopf.Body = kwargs["body"]
        nodes_idx: kopf.Index[str, dict[str, Any]] = kwargs["nodes_idx"]
        pods_idx: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["pods_idx"]
        memo: kopf.Memo = kwargs["memo"]
        if memo.stopping.is_set():  # an Event: per-object memos are shallow copies sharing it
            return
        reconciler: Reconciler = memo.reconciler
        metrics: OperatorMetrics = memo.metrics
        started = time.monotonic()
        try:
            result = await reconciler.reconcile(dict(body), _all(nodes_idx), _all(pods_idx))
        except ApiError as e:  # conflicts and API hiccups: retry soon, never crash-loop
            metrics.reconciles.labels("api-error").inc()
            raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=1 if e.code == 409 else 5) from e
        finally:
            metrics.duration.observe(time.monotonic() - started)
        metrics.reconciles.labels("ok").inc()
        metrics.writes.inc(result.writes)
        metrics.observe(body.metadata.namespace or "", body.metadata.name or "", result.status, result.desired)
        if result.writes:
            log.info("reconciled %s/%s: %d writes", body.metadata.namespace, body.metadata.name, result.writes)

    backoff = 1.0 if config.fast else 5.0  # unexpected errors retry soon, never a tight loop
    kopf.on.create(*md, id="reconcile", backoff=backoff, registry=registry)(reconcile)
    kopf.on.update(*md, id="reconcile", backoff=backoff, registry=registry)(reconcile)
    kopf.on.resume(*md, id="reconcile", backoff=backoff, registry=registry)(reconcile)
    kopf.timer(*md, id="resync", interval=config.resync_seconds, backoff=backoff, registry=registry)(reconcile)

    if config.autoscaler is not None:
        register_autoscaler(registry, config.autoscaler.interval_seconds, backoff)

    @kopf.on.delete(*md, id="forget", optional=True, registry=registry)
    def forget(uid: str, name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
        # Children go by ownerReference garbage collection; no finalizer is needed for that.
        reconciler: Reconciler | None = getattr(memo, "reconciler", None)
        if reconciler is not None:
            reconciler.forget(uid)
        autoscaler: Autoscaler | None = getattr(memo, "autoscaler", None)
        if autoscaler is not None:
            autoscaler.forget(f"{namespace or 'default'}/{name}")
        metrics: OperatorMetrics | None = getattr(memo, "metrics", None)
        if metrics is not None:
            metrics.forget(namespace or "", name)

    return registry


def register_autoscaler(registry: kopf.OperatorRegistry, interval: float, backoff: float) -> None:
    """A timer per ModelDeployment (kopf runs on the leader only) and an index of every deployment,
    so a decision sees its pool neighbours without an API call."""
    md = (C.GROUP, C.VERSION, C.PLURAL)

    @kopf.index(*md, id="mds_idx", registry=registry)
    def mds_idx(uid: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {uid: {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                      **{k: dict(body.get(k) or {}) for k in ("metadata", "spec", "status")}}}

    async def autoscale(**kwargs: Any) -> None:
        memo: kopf.Memo = kwargs["memo"]
        body: kopf.Body = kwargs["body"]
        if memo.stopping.is_set() or not (body.get("spec") or {}).get("autoscaling"):
            return
        autoscaler: Autoscaler = memo.autoscaler
        try:
            await autoscaler.tick(dict(body), _all(kwargs["nodes_idx"]), _all(kwargs["pods_idx"]),
                                  _all(kwargs["mds_idx"]))
        except ApiError as e:
            raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=1 if e.code == 409 else 5) from e

    kopf.timer(*md, id="autoscale", interval=interval, backoff=backoff, registry=registry)(autoscale)
