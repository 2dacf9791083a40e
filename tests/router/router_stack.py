"""Harness for router integration tests: real uvicorn servers on 127.0.0.1 inside the test's loop.

A module of its own (not conftest): tests/helm has a conftest too, and `from conftest import`
resolves to whichever directory is first on sys.path when both are collected in one run."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).parent))

from fake_engine import Behaviour, EngineState, create_engine_app
from quick_uvicorn import QuickServer

from supernode.httpserver import limits_of, uvicorn_options
from supernode.router.app import create_app
from supernode.router.config import RouterConfig

MODEL = "deepseek-v4-flash"


async def serve(app: FastAPI, **options: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """``options``: extra uvicorn.Config arguments (e.g. supernode.httpserver.uvicorn_options)."""
    server = QuickServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           access_log=False, **options))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def router_over(tmp: Path, endpoints: list[dict[str, Any]]) -> AsyncIterator[tuple[FastAPI, str]]:
    """A router on 127.0.0.1 reading ``endpoints`` from a local discovery file (polled every 50 ms, engines scraped
    every 100 ms): its app and URL, stopped on exit."""
    (tmp / "endpoints.json").write_text(json.dumps({"endpoints": endpoints}))
    app = create_app(RouterConfig.model_validate({
        "discovery": {"type": "local", "path": str(tmp / "endpoints.json"), "poll_interval_s": 0.05},
        "health": {"scrape_interval_s": 0.1}, "admission": None}))
    server, task, url = await serve(app)
    try:
        yield app, url
    finally:
        server.should_exit = True
        await task


@dataclass
class Stack:
    tmp: Path
    engines: dict[str, EngineState] = field(default_factory=dict)
    engine_urls: dict[str, str] = field(default_factory=dict)
    router_url: str = ""
    metrics_url: str = ""  # the router's ops port (/metrics, /health, /ready)
    router_app: FastAPI | None = None
    _servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = field(default_factory=list)

    @property
    def endpoints_path(self) -> Path:
        return self.tmp / "endpoints.json"

    async def engine(self, name: str, behaviour: Behaviour | None = None) -> str:
        app = create_engine_app(behaviour or Behaviour(name=name))
        server, task, url = await serve(app)
        self._servers.append((server, task))
        self.engines[name] = app.state.engine
        self.engine_urls[name] = url
        return url

    def write_endpoints(self, endpoints: list[dict[str, Any]]) -> None:
        tmp = self.endpoints_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"endpoints": endpoints}))
        tmp.replace(self.endpoints_path)

    async def router(self, extra: dict[str, Any] | None = None, **kwargs: Any) -> str:
        cfg: dict[str, Any] = {
            "discovery": {"type": "local", "path": str(self.endpoints_path), "poll_interval_s": 0.05},
            "health": {"scrape_interval_s": 0},
            "timeouts": {"connect_s": 1, "first_byte_s": 2, "between_chunks_s": 1, "total_s": 5, "keepalive_s": 0.2},
            "admission": None,  # explicitly no admission (anonymous) unless a test configures it
        }
        for key, value in (extra or {}).items():
            cfg[key] = {**(cfg.get(key) or {}), **value} if isinstance(value, dict) else value
        config = RouterConfig.model_validate(cfg)
        app = create_app(config, **kwargs)
        server, task, url = await serve(app, **uvicorn_options(limits_of(config.server)))
        self._servers.append((server, task))
        ops, ops_task, self.metrics_url = await serve(app.state.ops_app)
        self._servers.append((ops, ops_task))
        self.router_app = app
        self.router_url = url
        return url

    async def close(self) -> None:
        for server, _ in reversed(self._servers):
            server.should_exit = True
        await asyncio.gather(*(t for _, t in self._servers), return_exceptions=True)


def ep(url: str, **kw: Any) -> dict[str, Any]:
    """An endpoint record; its deployment is named after the port so responses tell engines apart."""
    return {"url": url, "model": MODEL, "deployment": served_name(url).split("/")[0], **kw}


def served_name(url: str, group: int = 0) -> str:
    """What the router's x-supernode-endpoint header says for the engine at ``url`` (see ``ep``)."""
    return f"engine-{url.rsplit(':', 1)[1]}/{group}"


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def ledger_rows(ledger_dir: Path) -> list[dict[str, Any]]:
    """Every row of the SQLite usage ledger the stack's router writes (``metering.ledger_path``), in order."""
    db = sqlite3.connect(ledger_dir / "usage.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM usage ORDER BY id")]
    finally:
        db.close()
