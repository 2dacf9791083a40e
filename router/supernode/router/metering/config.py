"""Metering configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MeteringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    backend: Literal["sqlite"] = "sqlite"
    ledger_path: Path = Field(Path("supernode-usage.sqlite3"), description="SQLite file (WAL mode); ':memory:' ok")
    # NORMAL: a commit survives the router process being killed (-9); FULL: also an OS crash / power
    # loss, at the cost of an fsync per request (see docs/tenants.md for measured costs).
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout_ms: int = Field(5000, ge=0)
