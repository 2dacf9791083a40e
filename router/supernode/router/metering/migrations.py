"""Versioned PostgreSQL schema for the shared ledger, applied at start under an advisory lock.

Append a new (version, statements) pair for a change; never edit an applied one, and keep changes
additive (new columns with defaults), so a router starting on an older schema applies what is
missing and an older router (a rollback) keeps working on a newer schema.
"""

from __future__ import annotations

from typing import Any

LOCK_ID = 0x5355504E  # pg_advisory_xact_lock key: "SUPN"

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE IF NOT EXISTS usage (
          id BIGSERIAL PRIMARY KEY,
          ledger_key TEXT NOT NULL UNIQUE,
          request_id TEXT NOT NULL, tenant TEXT NOT NULL, api TEXT NOT NULL,
          model TEXT NOT NULL, mode TEXT NOT NULL, served_model TEXT NOT NULL, served_mode TEXT NOT NULL,
          endpoint TEXT NOT NULL,
          prompt_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL,
          completion_tokens BIGINT NOT NULL, reasoning_tokens BIGINT NOT NULL,
          status TEXT NOT NULL, error TEXT NOT NULL,
          started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION NOT NULL,
          queued_seconds DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS usage_time ON usage (finished_at)",
        "CREATE INDEX IF NOT EXISTS usage_tenant_time ON usage (tenant, finished_at)",
    )),
    (2, (
        "ALTER TABLE usage ADD COLUMN IF NOT EXISTS replica TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE usage ADD COLUMN IF NOT EXISTS recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()",
    )),
    (3, (  # open rows (admitted, not finished) and the replicas' heartbeats that tell live ones from dead
        "CREATE INDEX IF NOT EXISTS usage_open ON usage (replica) WHERE status = 'open'",
        "CREATE TABLE IF NOT EXISTS router_replicas (name TEXT PRIMARY KEY, seen_at TIMESTAMPTZ NOT NULL)",
    )),
)
LATEST = MIGRATIONS[-1][0]


def migrate(conn: Any, schema: str) -> tuple[int, list[int]]:
    """Apply the missing migrations in one transaction (``conn`` a psycopg connection, autocommit
    off). Returns (version found, versions applied). Concurrent replicas serialise on the advisory lock."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        conn.execute(
            "CREATE TABLE IF NOT EXISTS supernode_schema_migrations ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM supernode_schema_migrations").fetchone()
        current = int(row[0])
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO supernode_schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return current, applied
