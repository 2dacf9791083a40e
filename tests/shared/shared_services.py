"""The real Redis and PostgreSQL of this machine (and of CI), isolated per test.

Under CI=true an unreachable service FAILS the test; elsewhere the test is skipped with the reason.
Each test gets its own Redis key prefix and its own PostgreSQL schema (dropped afterwards)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("SUPERNODE_TEST_REDIS_PORT", "6379"))
PG_HOST, PG_PORT = "127.0.0.1", int(os.environ.get("SUPERNODE_TEST_PG_PORT", "5432"))
PG_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the service must run; see docs/tenants.md)")
    pytest.skip(reason)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def drop_keys(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()
