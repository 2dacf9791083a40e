"""Metering configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class MeteringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    backend: Literal["sqlite"] = "sqlite"
    ledger_path: Path = Field(Path("supernode-usage.sqlite3"), description="SQLite file (WAL mode); ':memory:' ok")
    # NORMAL: a commit survives the router process being killed (-9); FULL: also an OS crash / power
    # loss, at the cost of an fsync per request (see docs/tenants.md for measured costs).
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout_ms: int = Field(5000, ge=0)
    # While a stream runs, its open row is updated with the tokens delivered so far this often, so a
    # router killed mid-stream leaves an `interrupted` row with at most this much usage unrecorded.
    checkpoint_seconds: float = Field(5.0, ge=0, description="0 = only at admission and at the end")

    def with_base_dir(self, base: Path) -> MeteringConfig:
        """A relative ``ledger_path`` is taken relative to the config file's folder."""
        if str(self.ledger_path) == ":memory:" or self.ledger_path.is_absolute():
            return self
        return self.model_copy(update={"ledger_path": (base / self.ledger_path).resolve()})
