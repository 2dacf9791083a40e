"""The shared usage ledger on PostgreSQL: one row per answered request, for the whole fleet.

``record`` commits before it returns (the request path calls it before the last byte). Each row gets
a ledger key generated here; the table is unique on it, so a replay never charges twice. When
PostgreSQL is unreachable the row goes to a local durable spool instead (still before the last
byte), and a background thread replays the spool, exactly once, when PostgreSQL answers again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from supernode.router.contracts import RouterError, UsageRecord
from supernode.router.metering.ledger import COLUMNS, SUMS, TOTAL_KEYS
from supernode.router.metering.migrations import LATEST, migrate
from supernode.router.metering.spool import Spool
from supernode.router.shared.config import PostgresLedgerConfig, redact
from supernode.router.shared.metrics import BackendMetrics

log = logging.getLogger("supernode.router.metering")

ROW_COLUMNS = ("ledger_key", "replica", *COLUMNS)
_INSERT = (f"INSERT INTO usage ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join(['%s'] * len(ROW_COLUMNS))}) "
           "ON CONFLICT (ledger_key) DO NOTHING")
REPLAY_BATCH = 500


class LedgerUnavailable(RouterError):
    status = 503
    code = "ledger_unavailable"


def row_of(record: UsageRecord, *, ledger_key: str, replica: str) -> dict[str, Any]:
    u = record.usage
    return {
        "ledger_key": ledger_key, "replica": replica, "request_id": record.request_id, "tenant": record.tenant,
        "api": record.api, "model": record.model, "mode": record.mode.value, "served_model": record.served_model,
        "served_mode": record.served_mode.value, "endpoint": record.endpoint, "prompt_tokens": u.prompt_tokens,
        "cached_tokens": u.cached_tokens, "completion_tokens": u.completion_tokens,
        "reasoning_tokens": u.reasoning_tokens, "status": record.status, "error": record.error,
        "started_at": record.started_at, "finished_at": record.finished_at, "queued_seconds": record.queued_seconds,
    }


def _where(tenant: str | None, start: float | None, end: float | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for cond, value in (("tenant = %s", tenant or None), ("finished_at >= %s", start), ("finished_at < %s", end)):
        if value is not None:
            clauses.append(cond)
            args.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class PostgresLedger:
    """Implements ``Meter`` plus the admin/quota queries of ``SqliteLedger``."""

    def __init__(self, config: PostgresLedgerConfig, metrics: BackendMetrics, *, replica: str,
                 dsn: str | None = None, replay: bool = True) -> None:
        self.config = config
        self.metrics = metrics
        self.replica = replica
        self._dsn = dsn if dsn is not None else config.resolve_dsn()
        self.where = redact(self._dsn)  # safe to log
        self.spool = Spool(config.spool_path)
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._down = False
        opts = f"-c search_path={config.schema_}"
        self.pool = ConnectionPool(self._dsn, min_size=1, max_size=config.pool_size, open=False, name="ledger",
                                   kwargs={"connect_timeout": max(1, int(config.connect_timeout_seconds)),
                                           "options": opts, "autocommit": True})
        self.pool.open(wait=False)
        self._migrate()
        self.metrics.spool_depth.set(len(self.spool))
        self._thread: threading.Thread | None = None
        if replay:
            self._thread = threading.Thread(target=self._replay_loop, name="ledger-spool-replay", daemon=True)
            self._thread.start()

    # --- start ----------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Apply the schema at start. PostgreSQL down at start is not fatal: rows spool until it is up
        (the replayer migrates first)."""
        try:
            with psycopg.connect(self._dsn, connect_timeout=max(1, int(self.config.connect_timeout_seconds))) as c:
                found, applied = migrate(c, self.config.schema_)
            self._set_up(True)
            if applied:
                log.info("ledger %s schema %s: migrated %d -> %d", self.where, self.config.schema_, found, LATEST)
            self._migrated = True
        except psycopg.Error as exc:
            self._migrated = False
            self._set_up(False)
            log.error("ledger %s unreachable at start (%s); rows spool to %s until it answers",
                      self.where, type(exc).__name__, self.spool.path)

    def _set_up(self, up: bool) -> None:
        self._down = not up
        self.metrics.up.labels("postgres").set(1.0 if up else 0.0)

    # --- writes ---------------------------------------------------------------------------------
    def record(self, record: UsageRecord) -> None:
        row = row_of(record, ledger_key=uuid.uuid4().hex, replica=self.replica)
        if not self._down and self._migrated:
            try:
                with self.pool.connection(timeout=self.config.connect_timeout_seconds) as conn:
                    conn.execute(_INSERT, [row[c] for c in ROW_COLUMNS])
                return
            except (psycopg.Error, PoolTimeout) as exc:
                self._set_up(False)
                log.error("ledger %s write failed (%s); spooling to %s", self.where, type(exc).__name__,
                          self.spool.path)
        self.spool.put(row["ledger_key"], row)
        self.metrics.spooled.inc()
        self.metrics.spool_depth.set(len(self.spool))

    def replay(self) -> int:
        """Move spooled rows into PostgreSQL (unique ledger keys make this exactly-once). Returns the
        number of rows moved; raises psycopg errors when PostgreSQL is still down."""
        with self._write_lock:
            if not self._migrated:
                with psycopg.connect(self._dsn, connect_timeout=max(1, int(self.config.connect_timeout_seconds))) as c:
                    migrate(c, self.config.schema_)
                self._migrated = True
            moved = 0
            while batch := self.spool.peek(REPLAY_BATCH):
                with self.pool.connection(timeout=self.config.connect_timeout_seconds) as conn, \
                        conn.transaction(), conn.cursor() as cur:
                    cur.executemany(_INSERT, [[r[c] for c in ROW_COLUMNS] for _, r in batch])
                self.spool.drop([seq for seq, _ in batch])  # after the commit: a crash here replays as no-ops
                moved += len(batch)
                self.metrics.spool_replayed.inc(len(batch))
                self.metrics.spool_depth.set(len(self.spool))
            return moved

    def _probe(self) -> None:
        with self.pool.connection(timeout=self.config.connect_timeout_seconds) as conn:
            conn.execute("SELECT 1")

    def _replay_loop(self) -> None:
        while not self._stop.wait(self.config.replay_interval_seconds):
            if not self._down and not len(self.spool) and self._migrated:
                continue
            try:
                if self._down:
                    self._probe()
                moved = self.replay()
                if self._down:
                    log.info("ledger %s reachable again; %d spooled rows replayed", self.where, moved)
                self._set_up(True)
            except (psycopg.Error, PoolTimeout, OSError) as exc:
                self._set_up(False)
                log.debug("ledger %s still unreachable: %s", self.where, type(exc).__name__)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.pool.close()
        self.spool.close()

    # --- queries (whole fleet) ------------------------------------------------------------------
    def _query(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        try:
            with self.pool.connection(timeout=self.config.connect_timeout_seconds) as conn:
                return list(conn.execute(sql, args).fetchall())
        except (psycopg.Error, PoolTimeout) as exc:
            raise LedgerUnavailable(f"the usage ledger is unreachable ({type(exc).__name__})",
                                    retry_after=5.0) from None

    def rows(self, *, tenant: str | None = None, start: float | None = None, end: float | None = None,
             limit: int = 10000) -> list[dict[str, Any]]:
        where, args = _where(tenant, start, end)
        sql = f"SELECT {', '.join(COLUMNS)} FROM usage{where} ORDER BY finished_at, id LIMIT %s"
        return [dict(zip(COLUMNS, r, strict=True)) for r in self._query(sql, [*args, int(limit)])]

    def totals(self, *, tenant: str | None = None, start: float | None = None,
               end: float | None = None) -> list[dict[str, Any]]:
        where, args = _where(tenant, start, end)
        sums = ", ".join(f"SUM({c})::bigint" for c in SUMS)
        sql = (f"SELECT tenant, served_model, served_mode, COUNT(*), SUM(CASE WHEN status != 'ok' THEN 1 ELSE 0 END)"
               f"::bigint, {sums} FROM usage{where} GROUP BY tenant, served_model, served_mode "
               "ORDER BY tenant, served_model, served_mode")
        keys = (*TOTAL_KEYS, "requests", "errors", *SUMS)
        return [dict(zip(keys, r, strict=True)) for r in self._query(sql, args)]

    def tokens_by_tenant(self, since: float) -> dict[str, int]:
        """Fleet-wide prompt + completion tokens per tenant since ``since``; rows still in this
        replica's spool are added. PostgreSQL down: the spool alone (logged)."""
        out: dict[str, int] = {}
        try:
            got = self._query("SELECT tenant, SUM(prompt_tokens + completion_tokens)::bigint FROM usage "
                              "WHERE finished_at >= %s GROUP BY tenant", [since])
            out = {t: int(n or 0) for t, n in got}
        except LedgerUnavailable:
            log.error("ledger %s unreachable: monthly totals start from this replica's spool only", self.where)
        for r in self.spool.rows():
            if r["finished_at"] >= since:
                out[r["tenant"]] = out.get(r["tenant"], 0) + int(r["prompt_tokens"]) + int(r["completion_tokens"])
        return out

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM usage", [])[0][0])
