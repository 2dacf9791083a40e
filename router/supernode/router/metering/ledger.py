"""The usage ledger: one SQLite row per request (WAL mode).

A request's row is written ``open`` when it is admitted and finalised (same router-generated
``key``) when it ends, both committed before the call returns. A router killed in between leaves the
row open; the next start closes every open row as ``interrupted`` (``close_interrupted``), keeping
what was known at admission (tenant, model, prompt estimate), so no admitted request is lost from
the audit trail.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from supernode.router.contracts import UsageRecord

log = logging.getLogger("supernode.router.metering")

COLUMNS: tuple[str, ...] = (
    "key", "request_id", "tenant", "api", "model", "mode", "served_model", "served_mode", "endpoint",
    "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens",
    "status", "error", "started_at", "finished_at", "queued_seconds",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
  id INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL, tenant TEXT NOT NULL, api TEXT NOT NULL,
  model TEXT NOT NULL, mode TEXT NOT NULL, served_model TEXT NOT NULL, served_mode TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
  status TEXT NOT NULL, error TEXT NOT NULL,
  started_at REAL NOT NULL, finished_at REAL NOT NULL, queued_seconds REAL NOT NULL,
  key TEXT
);
CREATE INDEX IF NOT EXISTS usage_time ON usage(finished_at);
CREATE INDEX IF NOT EXISTS usage_tenant_time ON usage(tenant, finished_at);
"""
# After the migration (older ledgers have no key column): the key is unique, open rows are found fast.
_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS usage_key ON usage(key);
CREATE INDEX IF NOT EXISTS usage_open ON usage(status) WHERE status = 'open';
"""

TOTAL_KEYS = ("tenant", "model", "mode")
SUMS = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")


def _row(r: UsageRecord) -> tuple[Any, ...]:
    u = r.usage
    return (
        r.key or f"led_{uuid.uuid4().hex}",
        r.request_id, r.tenant, r.api, r.model, str(r.mode.value), r.served_model, str(r.served_mode.value),
        r.endpoint, u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens,
        r.status, r.error, r.started_at, r.finished_at, r.queued_seconds,
    )  # fmt: skip


def _where(tenant: str | None, start: float | None, end: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if tenant:
        clauses.append("tenant = ?")
        args.append(tenant)
    if start is not None:
        clauses.append("finished_at >= ?")
        args.append(start)
    if end is not None:
        clauses.append("finished_at < ?")
        args.append(end)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _private_file(path: Path) -> None:
    """The ledger holds tenants' usage: its folder (when created here) 0700, the file 0600 (SQLite
    creates its -wal/-shm files with the main file's mode)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


class SqliteLedger:
    """Implements ``Meter``. Writes go through one connection under a lock (commit in the caller's
    thread: sub-millisecond with synchronous=NORMAL); reads open their own connection (WAL lets them
    run beside the writer), so the admin API can run them in a worker thread."""

    def __init__(self, path: Path | str, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self._sync = synchronous
        self._busy = busy_timeout_ms
        if self.path != ":memory:":
            _private_file(Path(self.path))
        self._lock = threading.Lock()
        self._db = self._connect()
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal" and self.path != ":memory:":
            log.warning("ledger %s: journal_mode is %s, not WAL", self.path, mode)
        self._db.executescript(_SCHEMA)
        if "key" not in {row[1] for row in self._db.execute("PRAGMA table_info(usage)")}:
            self._db.execute("ALTER TABLE usage ADD COLUMN key TEXT")
        self._db.executescript(_INDEXES)
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={int(self._busy)}")
        db.execute(f"PRAGMA synchronous={self._sync}")
        return db

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self.path == ":memory:":
            with self._lock:
                yield self._db
            return
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def open(self, record: UsageRecord) -> None:
        """Write the admitted request as an ``open`` row (durable when this returns)."""
        self._write(record, status="open")

    def record(self, record: UsageRecord) -> None:
        """Finalise the request's row (insert it when it was never opened)."""
        self._write(record, status=None)

    def _write(self, record: UsageRecord, *, status: str | None) -> None:
        row = list(_row(record))
        if status is not None:
            row[COLUMNS.index("status")] = status
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "key")
        # opening never overwrites: a late open (its thread outlived a cancelled request) loses to the end
        conflict = "DO NOTHING" if status == "open" else f"DO UPDATE SET {updates}"
        sql = (f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
               f"ON CONFLICT(key) {conflict}")
        with self._lock:
            if self._closed:
                raise RuntimeError("ledger is closed")
            self._db.execute(sql, row)  # autocommit: durable when this returns

    def progress(self, record: UsageRecord) -> None:
        """Update a still-open row with the usage known so far (a no-op once it is finalised)."""
        u = record.usage
        with self._lock:
            if self._closed:
                raise RuntimeError("ledger is closed")
            self._db.execute(
                "UPDATE usage SET prompt_tokens = ?, cached_tokens = ?, completion_tokens = ?, reasoning_tokens = ?, "
                "endpoint = ?, finished_at = ? WHERE key = ? AND status = 'open'",
                (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens, record.endpoint,
                 record.finished_at, record.key))

    def close_interrupted(self, now: float | None = None) -> int:
        """Close every ``open`` row (left by a router that died mid-request) as ``interrupted``."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE usage SET status = 'interrupted', finished_at = ?, "
                "error = 'router stopped before the request finished; usage as known at admission' "
                "WHERE status = 'open'", (time.time() if now is None else now,))
            n = cur.rowcount
        if n:
            log.warning("ledger %s: closed %d open request(s) as interrupted", self.path, n)
        return n

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    # --- queries -----------------------------------------------------------------------------
    def rows(
        self, *, tenant: str | None = None, start: float | None = None, end: float | None = None, limit: int = 10000
    ) -> list[dict[str, Any]]:
        where, args = _where(tenant, start, end)
        sql = f"SELECT {', '.join(COLUMNS)} FROM usage{where} ORDER BY finished_at, id LIMIT ?"
        with self._reader() as db:
            return [dict(zip(COLUMNS, r, strict=True)) for r in db.execute(sql, [*args, int(limit)])]

    def totals(
        self, *, tenant: str | None = None, start: float | None = None, end: float | None = None
    ) -> list[dict[str, Any]]:
        """Per tenant and *served* model/mode: requests, errors and token sums."""
        where, args = _where(tenant, start, end)
        sums = ", ".join(f"SUM({c})" for c in SUMS)
        sql = (
            f"SELECT tenant, served_model, served_mode, COUNT(*), SUM(status != 'ok'), {sums} FROM usage{where} "
            "GROUP BY tenant, served_model, served_mode ORDER BY tenant, served_model, served_mode"
        )
        keys = (*TOTAL_KEYS, "requests", "errors", *SUMS)
        with self._reader() as db:
            return [dict(zip(keys, r, strict=True)) for r in db.execute(sql, args)]

    def tokens_by_tenant(self, since: float) -> dict[str, int]:
        """Prompt + completion tokens per tenant since ``since`` (monthly quotas after a restart)."""
        sql = "SELECT tenant, SUM(prompt_tokens + completion_tokens) FROM usage WHERE finished_at >= ? GROUP BY tenant"
        with self._reader() as db:
            return {t: int(n or 0) for t, n in db.execute(sql, (since,))}

    def count(self) -> int:
        with self._reader() as db:
            return int(db.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
