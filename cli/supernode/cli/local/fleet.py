"""Runs `supernode router-fleet`: N router replica processes, restarted when they die, behind the front."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from supernode.cli.local.front import make_front
from supernode.cli.local.procs import port_free
from supernode.router.config import RouterConfig
from supernode.router.shared.config import ENV_REPLICA_ID, PostgresLedgerConfig, RedisState


def check_shared(config: RouterConfig, replicas: int) -> str:
    """Why ``config`` cannot run as ``replicas`` replicas ("" = it can)."""
    if replicas < 1:
        return "--replicas must be at least 1"
    if replicas == 1:
        return ""
    ledger = config.metering.effective_ledger() if config.metering is not None else None
    if not isinstance(config.state, RedisState):
        return (f"{replicas} replicas need state.type: redis (with local state each replica would grant every "
                "tenant's limits and quota again)")
    if config.metering is not None and not isinstance(ledger, PostgresLedgerConfig):
        return f"{replicas} replicas need metering.ledger.type: postgres (a SQLite ledger per replica bills a part)"
    return ""


FLEET_STATE = "router-fleet.json"  # the file `supernode up` has a fleet write its replicas to


def fleet_ops_urls(state_file: Path) -> list[str]:
    """The ops URLs (/metrics, /autoscaling/signals) of the replicas a fleet's state file lists now."""
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return []
    return [f"http://127.0.0.1:{r['opsPort']}" for r in data.get("replicas") or [] if r.get("opsPort")]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def replica_config(source: Path, name: str) -> tuple[Path, int | None]:
    """A copy of the fleet's config for one replica (next to it, so relative paths resolve the same):
    its own ledger spool file and, when the router serves an ops port, its own free one (returned)."""
    import yaml

    from supernode.router.config import ServerConfig

    data = yaml.safe_load(source.read_text()) or {}
    server = data.setdefault("server", {})
    ops_port: int | None = None
    if "metrics_port" in ServerConfig.model_fields and server.get("metrics_port", 0) is not None:
        ops_port = server["metrics_port"] = free_port()
    ledger = (data.get("metering") or {}).get("ledger") or {}
    if ledger.get("type") == "postgres":
        spool = Path(ledger.get("spoolPath") or ledger.get("spool_path") or "supernode-ledger-spool.sqlite3")
        ledger.pop("spool_path", None)
        ledger["spoolPath"] = str(spool.with_name(f"{spool.stem}-{name}{spool.suffix}"))
    out = source.with_name(f".{source.stem}-{name}.yaml")
    out.write_text(yaml.safe_dump(data))
    return out, ops_port


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    config: Path | None = None
    ops_port: int | None = None
    restarts: int = 0
    next_start: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.replicas = [Replica(f"replica-{i}", free_port()) for i in range(args.replicas)]
        self.stopping = False

    def _spawn(self, r: Replica) -> None:
        a = self.args
        env = {**os.environ, ENV_REPLICA_ID: r.name}
        r.config, r.ops_port = replica_config(Path(a.config), r.name)
        r.proc = subprocess.Popen(
            [sys.executable, "-m", "supernode.cli", "router", "--config", str(r.config), "--host", "127.0.0.1",
             "--port", str(r.port), "--log-level", a.log_level, "--shutdown-timeout", str(a.shutdown_timeout)],
            env=env)

    def _write_state(self) -> None:
        if not self.args.state_file:
            return
        data = {"front": f"http://{self.args.host}:{self.args.port}",
                "replicas": [{"name": r.name, "port": r.port, "opsPort": r.ops_port,
                              "pid": r.proc.pid if r.proc else None, "restarts": r.restarts}
                             for r in self.replicas]}
        tmp = Path(self.args.state_file).with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.args.state_file)

    def live_urls(self) -> list[str]:
        return [r.url for r in self.replicas if r.proc is not None and r.proc.poll() is None]

    async def _supervise(self) -> None:
        while not self.stopping:
            changed = False
            now = time.monotonic()
            for r in self.replicas:
                if r.proc is not None and r.proc.poll() is not None and r.next_start == 0.0:
                    print(f"supernode router-fleet: {r.name} exited ({r.proc.returncode}); restarting",
                          file=sys.stderr, flush=True)
                    r.next_start = now + min(5.0, 0.5 * 2 ** min(r.restarts, 4))
                if r.proc is not None and r.proc.poll() is not None and 0 < r.next_start <= now:
                    if not port_free(r.port):
                        r.port = free_port()
                    r.restarts += 1
                    r.next_start = 0.0
                    self._spawn(r)
                    changed = True
            if changed:
                self._write_state()
            await asyncio.sleep(0.2)

    async def _main(self) -> None:
        for r in self.replicas:
            self._spawn(r)
        self._write_state()
        runner = web.AppRunner(make_front(self.live_urls), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.args.host, self.args.port, reuse_address=True)
        await site.start()
        print(f"supernode router-fleet: {len(self.replicas)} replicas behind http://{self.args.host}:"
              f"{self.args.port}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        supervise = asyncio.create_task(self._supervise())
        await stop.wait()
        self.stopping = True
        supervise.cancel()
        for r in self.replicas:  # replicas drain their in-flight requests (their own shutdown timeout)
            if r.proc is not None and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.args.shutdown_timeout + 5
        while time.monotonic() < deadline and any(r.proc and r.proc.poll() is None for r in self.replicas):
            await asyncio.sleep(0.1)
        await runner.cleanup()
        for r in self.replicas:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.kill()

    def run(self) -> int:
        try:
            asyncio.run(self._main())
        finally:
            for r in self.replicas:
                if r.proc is not None and r.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        r.proc.kill()
        return 0
