"""Waiting on a condition inside a test's event loop (a module of its own, imported by test files as
``from polling import until``; tests/conftest.py puts tests/ on sys.path)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    """Return once ``cond()`` is true; TimeoutError after ``timeout`` seconds. Polls every 10 ms."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)
