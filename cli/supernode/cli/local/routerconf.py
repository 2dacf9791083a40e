"""The router config `supernode up` writes: `local` discovery on the endpoint file, the tenants file,
the usage ledger in the state dir, and the deployments' aliases (with the mode an alias implies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.cli.local.statefile import ENDPOINTS_FILE, LEDGER_FILE

# Aliases whose meaning includes a mode (FACTS.md: the retired DeepSeek names).
ALIAS_MODES = {"deepseek-chat": C.MODE_NON_THINK, "deepseek-reasoner": C.MODE_THINK_HIGH}


def shared_env(redis: str | None, postgres: str | None) -> dict[str, str]:
    """The shared-state URL/DSN go to the routers by env, never into the written config (passwords)."""
    from supernode.router.shared.config import ENV_POSTGRES_DSN, ENV_REDIS_URL

    env = {}
    if redis:
        env[ENV_REDIS_URL] = redis
    if postgres:
        env[ENV_POSTGRES_DSN] = postgres
    return env


def router_config(deployments: list[ModelDeployment], *, state_dir: Path, port: int,
                  tenants: Path | None, metrics_port: int = 0, redis: bool = False,
                  postgres: bool = False) -> dict[str, Any]:
    """Without a tenants file, authentication is off by an explicit `anonymous: true` (local trials);
    /metrics is on its own loopback port (``metrics_port``; 0 = any free one). ``redis`` / ``postgres``:
    shared state for several replicas (URL and DSN from the environment, see ``shared_env``)."""
    aliases: dict[str, dict[str, str]] = {}
    for md in deployments:
        for alias in md.spec.model.aliases:
            target = {"model": md.spec.model.name}
            if alias in ALIAS_MODES:
                target["mode"] = ALIAS_MODES[alias]
            aliases[alias] = target
    admission: dict[str, Any] = {"anonymous": True}
    if tenants is not None:
        admission = {"tenantsFile": str(tenants.resolve())}
    metering: dict[str, Any] = {"ledger_path": str((state_dir / LEDGER_FILE).resolve())}
    if postgres:  # DSN from $SUPERNODE_POSTGRES_DSN; rows spool in the state dir while it is down
        metering["ledger"] = {"type": "postgres", "spoolPath": str((state_dir / "ledger-spool.sqlite3").resolve())}
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port},
        "discovery": {"type": "local", "path": str((state_dir / ENDPOINTS_FILE).resolve()), "poll_interval_s": 0.25},
        "models": {"aliases": aliases},
        "health": {"scrape_interval_s": 0.5, "unhealthy_after": 2},
        "admission": admission,
        "metering": metering,
        # Deployments that may scale to zero: the router holds their requests while the first group starts.
        "cold_start": {"models": [md.spec.model.name for md in deployments
                                  if md.spec.autoscaling is not None and md.spec.autoscaling.min_replicas == 0]},
    }
    if redis:  # URL from $SUPERNODE_REDIS_URL; keys prefixed per state dir (several stacks may share a Redis)
        import hashlib

        tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
        config["state"] = {"type": "redis", "keyPrefix": f"supernode-{tag}"}
    return config
