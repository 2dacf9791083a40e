"""Usage metering: a durable per-request ledger (SQLite, WAL) and token metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from supernode.router import contracts
from supernode.router.metering.config import MeteringConfig
from supernode.router.metering.ledger import SqliteLedger
from supernode.router.metering.metered import MeteredLedger

__all__ = ["MeteredLedger", "MeteringConfig", "SqliteLedger", "build_meter"]


def build_meter(config: MeteringConfig, *, registry: CollectorRegistry | None = None) -> MeteredLedger:
    """The ledger behind ``Meter``, counting tokens into ``registry`` (a private one when None).
    Rows left open by a previous run of this router are closed as ``interrupted`` first."""
    ledger = SqliteLedger(config.ledger_path, synchronous=config.synchronous, busy_timeout_ms=config.busy_timeout_ms)
    ledger.close_interrupted()
    return MeteredLedger(ledger, registry)


def _conforms(m: MeteredLedger, s: SqliteLedger) -> tuple[contracts.Meter, contracts.Meter]:
    """Never called: lets mypy prove both satisfy the request path's ``Meter`` protocol."""
    return m, s
