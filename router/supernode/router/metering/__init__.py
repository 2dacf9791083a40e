"""Usage metering: a durable per-request ledger (SQLite WAL for one replica, PostgreSQL + a local spool
for several) and token metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from supernode.router.metering.config import MeteringConfig
from supernode.router.metering.ledger import SqliteLedger
from supernode.router.metering.metered import MeteredLedger
from supernode.router.metering.postgres import PostgresLedger
from supernode.router.shared.config import PostgresLedgerConfig, replica_id
from supernode.router.shared.metrics import for_registry

__all__ = ["MeteredLedger", "MeteringConfig", "PostgresLedger", "SqliteLedger", "build_meter"]


def build_meter(config: MeteringConfig, *, registry: CollectorRegistry | None = None) -> MeteredLedger:
    """The ledger behind ``Meter``, counting tokens into ``registry`` (a private one when None).
    Rows left open by a previous run of this router are closed as ``interrupted`` first (PostgreSQL,
    shared by replicas: those of this replica's name and of replicas whose heartbeat stopped)."""
    led = config.effective_ledger()
    ledger: SqliteLedger | PostgresLedger
    if isinstance(led, PostgresLedgerConfig):
        ledger = PostgresLedger(led, for_registry(registry), replica=replica_id())  # closes them at start
    else:
        ledger = SqliteLedger(led.path, synchronous=config.synchronous, busy_timeout_ms=config.busy_timeout_ms)
        ledger.close_interrupted()
    return MeteredLedger(ledger, registry)
