"""A local durable spool for ledger rows that could not reach PostgreSQL (SQLite, WAL, one file).

Each row carries its ledger key, so a replay that is interrupted after the remote commit and
before the local delete inserts nothing twice (the remote table is unique on the key).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

_SCHEMA = ("CREATE TABLE IF NOT EXISTS spool "
           "(seq INTEGER PRIMARY KEY, ledger_key TEXT NOT NULL UNIQUE, row TEXT NOT NULL)")


class Spool:
    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute(_SCHEMA)
        self._depth = int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def __len__(self) -> int:
        return self._depth

    def put(self, ledger_key: str, row: dict[str, Any], *, final: bool = True) -> None:
        """Durable when this returns. A final row replaces a spooled open row of the same key; an open
        row never replaces anything (as in the ledger itself)."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("INSERT OR IGNORE INTO spool (ledger_key, row) VALUES (?, ?)",
                             (ledger_key, json.dumps(row)))
            inserted = self._db.total_changes - before
            if not inserted and final:
                self._db.execute("UPDATE spool SET row = ? WHERE ledger_key = ? AND json_extract(row, '$.status') = "
                                 "'open'", (json.dumps(row), ledger_key))
            self._depth += inserted

    def peek(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            got = self._db.execute("SELECT seq, row FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(int(seq), json.loads(row)) for seq, row in got]

    def drop(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock:
            cur = self._db.executemany("DELETE FROM spool WHERE seq = ?", [(s,) for s in seqs])
            self._depth = max(0, self._depth - cur.rowcount)

    def rows(self) -> list[dict[str, Any]]:
        return [r for _, r in self.peek(1_000_000)]

    def close(self) -> None:
        with self._lock:
            self._db.close()
