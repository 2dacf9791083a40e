"""Thin kopf handlers: indices for inventory, one reconcile entry point, settings in one startup hook.

No module-global registry: `build_registry(config)` returns a fresh `kopf.OperatorRegistry`, so tests
and the CLI each get their own. `kopf run -m supernode.operator.kopf_main` uses the default one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from supernode.api import constants as C
from supernode.operator import drain_watch, health_watch
from supernode.operator.drain_watch import DrainWatchConfig
from supernode.operator.faults import DEFAULT_FAULT_CONDITIONS, Action
from supernode.operator.group_secrets import GroupKeys
from supernode.operator.health_book import HealthBook
from supernode.operator.kube import TRANSPORT_ERRORS, ApiError, KubeClient, load_access
from supernode.operator.metrics import OperatorMetrics
from supernode.operator.pod_informer import NodeInformer, PodInformer
from supernode.operator.reconcile import Reconciler
from supernode.operator.scaler import Autoscaler, AutoscalerConfig

log = logging.getLogger("supernode.operator")
RETRYABLE: tuple[type[BaseException], ...] = (ApiError, *TRANSPORT_ERRORS)  # the resync tries again later


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
    keys: GroupKeys | None = None  # per-group store secret + engine token (from the chart's Secret, via env)
    network_policies: bool = False  # a NetworkPolicy per group: only its own pods may connect
    autoscaler: AutoscalerConfig | None = None  # spec.autoscaling takes effect (None: not run)
    # Node conditions that, when True, mean the node's devices fail (docs/operator.md, "Device faults").
    fault_conditions: Mapping[str, Action] = field(default_factory=lambda: dict(DEFAULT_FAULT_CONDITIONS))
    fault_events: bool = True  # a device fault reconciles its deployments at once (False: at the next resync)
    # Where the Ascend device plugin writes its reports: one namespaced ConfigMap watch there (None: not read).
    device_info_namespace: str | None = C.ASCEND_DEVICE_INFO_NAMESPACE
    drain: DrainWatchConfig | None = None  # ask the routers which draining groups are idle (None: timeout only)

    def __post_init__(self) -> None:
        if self.metrics is not None and self.metrics_port is not None:
            raise ValueError("OperatorConfig: metrics_port with caller-owned metrics would bind the port twice")


class _NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf builds an "essence" of every watched object on every event (a deep copy of the body, then JSON) to
    detect changes for its change handlers. None are registered here (one event handler per kind does the
    work, and it compares what it reads itself, triggers.py), so that essence is never used: an empty one."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()


def _all(index: Mapping[Any, Iterable[Any]]) -> list[Any]:
    return [value for store in index.values() for value in store]


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    md = (C.GROUP, C.VERSION, C.PLURAL)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo | None:
        if config.server:
            return kopf.ConnectionInfo(server=config.server)
        access = load_access(None, context=config.context)
        return kopf.ConnectionInfo(server=access.url, token=access.token(), ca_path=access.ca_file,
                                   certificate_path=access.cert_file, private_key_path=access.key_file,
                                   insecure=not access.verify)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.posting.enabled = False  # our Events are explicit; kopf's per-handler ones are noise
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=C.GROUP)
        settings.persistence.diffbase_storage = _NoDiffBase(prefix=C.GROUP)
        # No handler needs a finalizer (no per-object timers or daemons, no delete handler); kopf removes
        # this one from objects that an older operator version put it on.
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
        memo.retries = {}
        if config.metrics is not None:
            memo.metrics, memo.owns_metrics = config.metrics, False
        else:
            memo.metrics, memo.owns_metrics = OperatorMetrics(), True
            memo.metrics.set_leader(True)  # no election: this process is the operator
            if config.metrics_port is not None:
                memo.metrics.serve(config.metrics_port, config.metrics_addr)
        memo.reconciler = Reconciler(KubeClient(load_access(config.server, context=config.context)),
                                     supernode_label=config.supernode_label, keys=config.keys,
                                     network_policies=config.network_policies,
                                     health=HealthBook(conditions=dict(config.fault_conditions)))
        # Pods through one lightweight watch, not a kopf index (pod_informer.py says why).
        memo.pods = PodInformer(memo.reconciler.client, watch_timeout=10 if config.fast else 300,
                                retry_seconds=0.2 if config.fast else 1.0)
        memo.pod_watch = asyncio.create_task(memo.pods.run(), name="supernode-pods")
        memo.reconciler.pod_index = memo.pods.index  # per-node usage and per-deployment pods, kept by the informer
        memo.nodes = NodeInformer(memo.reconciler.client, watch_timeout=10 if config.fast else 300,
                                  retry_seconds=0.2 if config.fast else 1.0)
        memo.node_watch = asyncio.create_task(memo.nodes.run(), name="supernode-nodes")
        memo.autoscaler = None if config.autoscaler is None else Autoscaler(
            memo.reconciler.client, config.autoscaler, supernode_label=config.supernode_label,
            registry=memo.metrics.registry, lws=memo.reconciler.lws_installed)

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        reconciler = getattr(memo, "reconciler", None)
        memo.stopping.set()  # handlers may still fire while kopf winds down: they return at once
        tasks = [getattr(memo, name, None) for name in ("resync", "autoscale", "pod_watch", "node_watch",
                                                        "device_info_watch")]
        for task in [*tasks, *list(getattr(memo, "retries", {}).values())]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        autoscaler: Autoscaler | None = getattr(memo, "autoscaler", None)
        if autoscaler is not None:
            await autoscaler.close()
        if reconciler is not None:
            await reconciler.client.close()
        metrics: OperatorMetrics | None = getattr(memo, "metrics", None)
        if metrics is not None and getattr(memo, "owns_metrics", True):
            metrics.stop()

    async def reconcile_one(body: Mapping[str, Any], memo: kopf.Memo, indices: Mapping[str, Any]) -> None:
        reconciler: Reconciler = memo.reconciler
        metrics: OperatorMetrics = memo.metrics
        meta = body.get("metadata") or {}
        pods: PodInformer = memo.pods
        nodes: NodeInformer = memo.nodes
        await pods.synced.wait()  # never plan without every pod's devices counted
        await nodes.synced.wait()
        started = time.monotonic()
        try:
            result = await reconciler.reconcile(dict(body), nodes.nodes, pods.pods)
        except ApiError:
            metrics.reconciles.labels("api-error").inc()
            raise
        finally:
            metrics.duration.observe(time.monotonic() - started)
        metrics.reconciles.labels("ok").inc()
        metrics.writes.inc(result.writes)
        for action in result.repairs:
            metrics.fault_repairs.labels(action).inc()
        for level in result.pod_faults:
            metrics.device_faults.labels(level).inc()
        metrics.observe(meta.get("namespace") or "", meta.get("name") or "", result.status, result.desired)
        if result.writes:
            log.info("reconciled %s/%s: %d writes", meta.get("namespace"), meta.get("name"), result.writes)

    backoff = 1.0 if config.fast else 5.0  # unexpected errors retry soon, never a tight loop

    async def attempt(body: Mapping[str, Any], memo: kopf.Memo, indices: Mapping[str, Any]) -> None:
        """One pass; on failure the same deployment is tried again later, from its latest state."""
        meta = body["metadata"]
        try:
            await reconcile_one(body, memo, indices)
            return
        except ApiError as e:  # conflicts and API hiccups: retry soon, never crash-loop
            delay = 1.0 if e.status == 409 else 5.0
            log.warning("reconcile of %s/%s: %s; again in %.0fs", meta.get("namespace"), meta["name"], e, delay)
        except TRANSPORT_ERRORS as e:
            delay = backoff
            log.warning("reconcile of %s/%s: %s; again in %.0fs", meta.get("namespace"), meta["name"], e, delay)
        except Exception:
            delay = backoff
            log.exception("reconcile of %s/%s failed; again in %.0fs", meta.get("namespace"), meta["name"], delay)
        retry_later(memo, indices, (meta.get("namespace") or "", meta["name"]), delay)

    def retry_later(memo: kopf.Memo, indices: Mapping[str, Any], key: tuple[str, str], delay: float) -> None:
        async def again() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(memo.stopping.wait(), delay)
            store = indices["mds_idx"].get(key)
            latest = next(iter(store), None) if store is not None else None
            if memo.stopping.is_set() or latest is None or latest["metadata"].get("deletionTimestamp"):
                return
            await attempt(latest, memo, indices)

        retries: dict[tuple[str, str], asyncio.Task[None]] = memo.retries
        if (pending := retries.get(key)) is not None and pending is not asyncio.current_task():
            pending.cancel()  # a newer failure: one retry per deployment
        task = retries[key] = asyncio.create_task(again(), name=f"supernode-retry-{key[0]}/{key[1]}")
        task.add_done_callback(lambda t: retries.pop(key, None) if retries.get(key) is t else None)

    @kopf.on.event(*md, id="reconcile", registry=registry)
    async def reconcile(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        """Every watch event of a ModelDeployment (the initial listing included): a pass, unless the event
        only echoes what the last completed pass already saw (our own status patches, kopf's metadata
        writes). kopf hands this object's events to one worker in order, batching a burst into its latest."""
        if memo.stopping.is_set():  # an Event: per-object memos are shallow copies sharing it
            return
        if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
            return  # children go with it (ownerReferences); the resync loop forgets what it knew
        if not memo.reconciler.needs_pass(body):
            memo.metrics.skipped.inc()
            return
        await attempt(dict(body), memo, kwargs)

    @kopf.index(*md, id="mds_idx", registry=registry)
    async def mds_idx(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
        return {(namespace or "", name): dict(body)}  # kopf decodes a fresh dict per event: no copy needed

    async def resync(memo: kopf.Memo, indices: Mapping[str, Any]) -> None:
        """Every `resync_seconds`: reconcile every ModelDeployment (gang health, drain timeouts, drift).

        One loop for the operator instead of a kopf timer per object: kopf puts a finalizer on every
        object that has a timer, so deleting a ModelDeployment while the operator is down would hang.
        Children need no finalizer (ownerReferences), so none is used at all.
        """
        known: dict[str, tuple[str, str]] = {}
        limit = asyncio.Semaphore(8)

        async def one(body: Mapping[str, Any]) -> None:
            async with limit:
                if memo.stopping.is_set():
                    return
                try:
                    await reconcile_one(body, memo, indices)
                except RETRYABLE as e:  # the next resync retries
                    log.warning("resync of %s/%s: %s", body["metadata"].get("namespace"), body["metadata"]["name"], e)
                except Exception:
                    log.exception("resync of %s/%s failed", body["metadata"].get("namespace"),
                                  body["metadata"]["name"])

        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(memo.stopping.wait(), config.resync_seconds)
            if memo.stopping.is_set():
                return
            bodies = [b for b in _all(indices["mds_idx"]) if not b["metadata"].get("deletionTimestamp")]
            current = {str(b["metadata"].get("uid") or b["metadata"]["name"]): (
                b["metadata"].get("namespace") or "", b["metadata"]["name"]) for b in bodies}
            for uid in known.keys() - current.keys():  # deleted: drop what we remember about it
                memo.reconciler.forget(uid)
                memo.metrics.forget(*known[uid])
            known = current
            # Objects a handler reconciled in the last half interval are up to date: their turn comes next time.
            fresh = [b for b in bodies if not memo.reconciler.passed_within(
                str(b["metadata"].get("uid") or b["metadata"]["name"]), config.resync_seconds / 2)]
            await asyncio.gather(*(one(b) for b in fresh))

    async def autoscale(memo: kopf.Memo, indices: Mapping[str, Any], interval: float) -> None:
        """Every `interval`: one autoscaling decision per autoscaled ModelDeployment, over the same index as
        the resync (an operator-wide loop, not a kopf timer per object: no finalizer). The decisions see
        their pool neighbours from the index without an API call."""
        autoscaler: Autoscaler = memo.autoscaler
        known: set[str] = set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(memo.stopping.wait(), interval)
            if memo.stopping.is_set():
                return
            bodies = [b for b in _all(indices["mds_idx"]) if not b["metadata"].get("deletionTimestamp")]
            current = {f"{b['metadata'].get('namespace') or 'default'}/{b['metadata']['name']}": b for b in bodies}
            for key in known - current.keys():  # deleted: drop its history
                autoscaler.forget(key)
            known = set(current)
            for key, body in current.items():
                if memo.stopping.is_set():
                    return
                if not (body.get("spec") or {}).get("autoscaling"):
                    continue
                try:
                    await autoscaler.tick(body, memo.nodes.nodes(), memo.pods.pods(), bodies)
                except RETRYABLE as e:  # the next interval decides again
                    log.warning("autoscaling %s: %s", key, e)
                except Exception:
                    log.exception("autoscaling %s failed", key)

    if config.drain is not None:
        drain_watch.register(registry, config.drain, reconcile_one, RETRYABLE)
    health_watch.register(registry, reconcile_one, RETRYABLE, react=config.fault_events,
                          device_info_namespace=config.device_info_namespace,
                          watch_timeout=10 if config.fast else 300, retry_seconds=0.2 if config.fast else 1.0)

    @kopf.on.startup(registry=registry)
    async def start_resync(memo: kopf.Memo, **kwargs: Any) -> None:
        memo.resync = asyncio.create_task(resync(memo, kwargs), name="supernode-resync")
        if config.autoscaler is not None:  # kopf runs on the elected leader only, so does this loop
            memo.autoscale = asyncio.create_task(autoscale(memo, kwargs, config.autoscaler.interval_seconds),
                                                 name="supernode-autoscale")

    return registry

