"""Admission control: tenants and API keys, limits, the fair priority queue, capacity and spill-over.

Build it from parsed config with ``build_gatekeeper``; the app lifespan owns ``start()`` / ``stop()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from supernode.router.admission.config import AdmissionConfig
from supernode.router.admission.gatekeeper import AdmissionTicket, Gatekeeper, UsageTotals
from supernode.router.admission.metrics import AdmissionMetrics
from supernode.router.admission.tenants import TenantsFileError, hash_key, load_directory
from supernode.router.contracts import PoolCapacity

__all__ = ["AdmissionConfig", "AdmissionTicket", "Gatekeeper", "build_gatekeeper", "hash_key"]


def loop_clock() -> float:
    """The running event loop's clock (so ``looptime`` drives limits in tests), else time.monotonic."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def build_gatekeeper(
    config: AdmissionConfig,
    capacity: PoolCapacity,
    *,
    clock: Callable[[], float] = loop_clock,
    wall_clock: Callable[[], float] = time.time,
    usage_totals: UsageTotals | None = None,
    registry: CollectorRegistry | None = None,
    factory: Callable[..., Gatekeeper] = Gatekeeper,
    **extra: Any,
) -> Gatekeeper:
    """``usage_totals`` (e.g. ``SqliteLedger.tokens_by_tenant``) seeds monthly quotas from the ledger;
    ``registry`` receives the admission metrics (a private one when None). A bad or missing tenants
    file raises TenantsFileError here (fail fast at startup); later bad reloads keep the previous tenants.
    ``factory`` (+ ``extra`` keywords) builds a subclass, e.g. the shared-state gatekeeper."""
    if config.tenants_file is not None and not config.tenants_file.exists():
        # never fall back to anonymous because a configured file is missing (auth off needs `anonymous`)
        raise TenantsFileError(f"tenants file {config.tenants_file} is missing (to run without authentication, "
                               "configure admission.anonymous: true instead of a tenants file)")
    gate = factory(
        config,
        capacity,
        load_directory(config.tenants_file),
        clock=clock,
        wall_clock=wall_clock,
        usage_totals=usage_totals,
        metrics=AdmissionMetrics(registry),
        **extra,
    )
    gate.tenants_file.mark_loaded()
    return gate
