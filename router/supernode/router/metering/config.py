"""Metering configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from supernode.router.shared.config import LedgerConfig, PostgresLedgerConfig, SqliteLedgerConfig


class MeteringConfig(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, hide_input_in_errors=True
    )

    backend: Literal["sqlite"] = "sqlite"
    ledger_path: Path = Field(Path("supernode-usage.sqlite3"), description="SQLite file (WAL mode); ':memory:' ok")
    # NORMAL: a commit survives the router process being killed (-9); FULL: also an OS crash / power
    # loss, at the cost of an fsync per request (see docs/tenants.md for measured costs).
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout_ms: int = Field(5000, ge=0)
    # While a stream runs, its open row is updated with the tokens delivered so far this often, so a
    # router killed mid-stream leaves an `interrupted` row with at most this much usage unrecorded.
    checkpoint_seconds: float = Field(5.0, ge=0, description="0 = only at admission and at the end")
    ledger: LedgerConfig | None = Field(
        None, description="{type: sqlite, path} or {type: postgres, dsn/dsnEnv}; absent = sqlite at ledger_path")

    def effective_ledger(self) -> SqliteLedgerConfig | PostgresLedgerConfig:
        return self.ledger if self.ledger is not None else SqliteLedgerConfig(path=self.ledger_path)

    def with_base_dir(self, base: Path) -> MeteringConfig:
        """A relative ``ledger_path`` is taken relative to the config file's folder."""
        out = self
        if str(self.ledger_path) != ":memory:" and not self.ledger_path.is_absolute():
            out = out.model_copy(update={"ledger_path": (base / self.ledger_path).resolve()})
        led = out.ledger
        if isinstance(led, SqliteLedgerConfig) and str(led.path) != ":memory:" and not led.path.is_absolute():
            out = out.model_copy(update={"ledger": led.model_copy(update={"path": (base / led.path).resolve()})})
        elif isinstance(led, PostgresLedgerConfig) and not led.spool_path.is_absolute():
            spool = (base / led.spool_path).resolve()
            out = out.model_copy(update={"ledger": led.model_copy(update={"spool_path": spool})})
        return out
