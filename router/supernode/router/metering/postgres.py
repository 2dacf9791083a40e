"""The shared usage ledger on PostgreSQL: one row per request, for the whole fleet.

``open`` writes an admitted request as an ``open`` row, ``progress`` updates it while a stream runs,
``record`` finalises it (or inserts it); each commits before it returns (the request path records
before the last byte). Rows are unique on the ledger key (the router's key for the request, else one
generated here), and one statement serves all three: an ``open`` row never overwrites anything, a
final row replaces only an ``open`` one — so a replay never charges twice. When PostgreSQL is
unreachable the row goes to a local durable spool instead, and a background thread replays it,
exactly once, when PostgreSQL answers again. The same thread beats this replica's heartbeat in
``router_replicas`` and closes, as ``interrupted``, open rows of replicas whose heartbeat stopped
(a router killed mid-request; several replicas share the table, so only dead ones' rows are closed).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from supernode.router.contracts import UsageRecord
from supernode.router.errors import LedgerUnavailable
from supernode.router.metering.ledger import COLUMNS, SUMS, TOTAL_KEYS
from supernode.router.metering.migrations import LATEST, migrate
from supernode.router.metering.spool import Spool
from supernode.router.shared.config import PostgresLedgerConfig, redact
from supernode.router.shared.metrics import BackendMetrics

log = logging.getLogger("supernode.router.metering")

FIELDS = tuple(c for c in COLUMNS if c != "key")  # the router's key is stored as ledger_key
ROW_COLUMNS = ("ledger_key", "replica", *FIELDS)
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in ROW_COLUMNS if c != "ledger_key")
_INSERT = (f"INSERT INTO usage ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join(['%s'] * len(ROW_COLUMNS))}) "
           f"ON CONFLICT (ledger_key) DO UPDATE SET {_UPDATES} "
           "WHERE usage.status = 'open' AND EXCLUDED.status <> 'open'")
_SELECT = ", ".join("ledger_key AS key" if c == "key" else c for c in COLUMNS)
_PROGRESS = ("UPDATE usage SET prompt_tokens = %s, cached_tokens = %s, completion_tokens = %s, "
             "reasoning_tokens = %s, endpoint = %s, finished_at = %s WHERE ledger_key = %s AND status = 'open'")
_BEAT = ("INSERT INTO router_replicas (name, seen_at) VALUES (%s, now()) "
         "ON CONFLICT (name) DO UPDATE SET seen_at = now()")
_CLOSE = ("UPDATE usage SET status = 'interrupted', finished_at = %s, "
          "error = 'router stopped before the request finished; usage as last known' "
          "WHERE status = 'open' AND (replica = %s OR (replica <> %s AND replica NOT IN "
          "(SELECT name FROM router_replicas WHERE seen_at > now() - make_interval(secs => %s))))")
REPLAY_BATCH = 500


def row_of(record: UsageRecord, *, replica: str, status: str | None = None) -> dict[str, Any]:
    u = record.usage
    return {
        "ledger_key": getattr(record, "key", "") or f"led_{uuid.uuid4().hex}", "replica": replica,
        "request_id": record.request_id, "tenant": record.tenant,
        "api": record.api, "model": record.model, "mode": record.mode.value, "served_model": record.served_model,
        "served_mode": record.served_mode.value, "endpoint": record.endpoint, "prompt_tokens": u.prompt_tokens,
        "cached_tokens": u.cached_tokens, "completion_tokens": u.completion_tokens,
        "reasoning_tokens": u.reasoning_tokens, "status": status or record.status, "error": record.error,
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
            self._beat()
            self.close_interrupted()  # what a previous run under this name, or a dead replica, left open
        except psycopg.Error as exc:
            self._migrated = False
            self._set_up(False)
            log.error("ledger %s unreachable at start (%s); rows spool to %s until it answers",
                      self.where, type(exc).__name__, self.spool.path)

    def _set_up(self, up: bool) -> None:
        self._down = not up
        self.metrics.up.labels("postgres").set(1.0 if up else 0.0)

    # --- writes ---------------------------------------------------------------------------------
    def open(self, record: UsageRecord) -> None:
        """The admitted request as an ``open`` row (durable, here or in the spool, when this returns)."""
        self._write(row_of(record, replica=self.replica, status="open"))

    def record(self, record: UsageRecord) -> None:
        """The request's final row: replaces its open row, or is inserted."""
        self._write(row_of(record, replica=self.replica))

    def progress(self, record: UsageRecord) -> None:
        """Usage delivered so far into a still-open row (best effort: skipped while PostgreSQL is down)."""
        key = getattr(record, "key", "")
        if not key or self._down or not self._migrated:
            return
        u = record.usage
        try:
            with self.pool.connection(timeout=self.config.connect_timeout_seconds) as conn:
                conn.execute(_PROGRESS, (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens,
                                         record.endpoint, record.finished_at, key))
        except (psycopg.Error, PoolTimeout) as exc:
            self._set_up(False)
            log.error("ledger %s progress update failed (%s)", self.where, type(exc).__name__)

    def close_interrupted(self, now: float | None = None, *, own: bool = True) -> int:
        """Close as ``interrupted`` the open rows of replicas whose heartbeat is older than
        ``staleReplicaSeconds`` and, with ``own`` (at start: a previous run under this name), this
        replica's. Returns the rows closed (0 while PostgreSQL is down)."""
        if self._down or not self._migrated:
            return 0
        try:
            with self.pool.connection(timeout=self.config.connect_timeout_seconds) as conn:
                cur = conn.execute(_CLOSE, (time.time() if now is None else now, self.replica if own else "",
                                            self.replica, float(self.config.stale_replica_seconds)))
                n = cur.rowcount
        except (psycopg.Error, PoolTimeout) as exc:
            self._set_up(False)
            log.error("ledger %s: closing interrupted rows failed (%s)", self.where, type(exc).__name__)
            return 0
        if n:
            log.warning("ledger %s: closed %d open request(s) of stopped routers as interrupted", self.where, n)
        return n

    def _beat(self) -> None:
        with self.pool.connection(timeout=self.config.connect_timeout_seconds) as conn:
            conn.execute(_BEAT, (self.replica,))

    def _write(self, row: dict[str, Any]) -> None:
        if not self._down and self._migrated:
            try:
                with self.pool.connection(timeout=self.config.connect_timeout_seconds) as conn:
                    conn.execute(_INSERT, [row[c] for c in ROW_COLUMNS])
                return
            except (psycopg.Error, PoolTimeout) as exc:
                self._set_up(False)
                log.error("ledger %s write failed (%s); spooling to %s", self.where, type(exc).__name__,
                          self.spool.path)
        self.spool.put(row["ledger_key"], row, final=row["status"] != "open")
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
        last_beat = 0.0
        while not self._stop.wait(self.config.replay_interval_seconds):
            beat = time.monotonic() - last_beat >= self.config.heartbeat_seconds
            if not self._down and not len(self.spool) and self._migrated and not beat:
                continue
            try:
                if self._down:
                    self._probe()
                moved = self.replay()
                if self._down:
                    log.info("ledger %s reachable again; %d spooled rows replayed", self.where, moved)
                self._set_up(True)
                if beat:
                    self._beat()
                    self.close_interrupted(own=False)
                    last_beat = time.monotonic()
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
        sql = f"SELECT {_SELECT} FROM usage{where} ORDER BY finished_at, id LIMIT %s"
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
                              "WHERE finished_at >= %s AND status <> 'open' GROUP BY tenant", [since])
            out = {t: int(n or 0) for t, n in got}
        except LedgerUnavailable:
            log.error("ledger %s unreachable: monthly totals start from this replica's spool only", self.where)
        for r in self.spool.rows():
            if r["finished_at"] >= since and r["status"] != "open":
                out[r["tenant"]] = out.get(r["tenant"], 0) + int(r["prompt_tokens"]) + int(r["completion_tokens"])
        return out

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM usage", [])[0][0])
