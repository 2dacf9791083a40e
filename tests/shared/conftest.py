"""Fixtures for the shared-state tests (real Redis / PostgreSQL, per-test prefix / schema)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "router"))

from shared_services import (
    PG_DSN,
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    drop_keys,
    drop_schema,
    require,
    unique,
)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    require("PostgreSQL", PG_HOST, PG_PORT)
    schema = unique("sn_test")
    yield schema
    drop_schema(schema)


@pytest.fixture
def pg_dsn() -> str:
    return PG_DSN


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    require("Redis", REDIS_HOST, REDIS_PORT)
    prefix = unique("sn_test")
    yield prefix
    await drop_keys(REDIS_URL, prefix)
