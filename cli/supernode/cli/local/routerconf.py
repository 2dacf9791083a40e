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


def router_config(deployments: list[ModelDeployment], *, state_dir: Path, port: int,
                  tenants: Path | None, metrics_port: int = 0) -> dict[str, Any]:
    """Without a tenants file, authentication is off by an explicit `anonymous: true` (local trials);
    /metrics is on its own loopback port (``metrics_port``; 0 = any free one)."""
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
    return {
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port},
        "discovery": {"type": "local", "path": str((state_dir / ENDPOINTS_FILE).resolve()), "poll_interval_s": 0.25},
        "models": {"aliases": aliases},
        "health": {"scrape_interval_s": 0.5, "unhealthy_after": 2},
        "admission": admission,
        "metering": {"ledger_path": str((state_dir / LEDGER_FILE).resolve())},
        # Deployments that may scale to zero: the router holds their requests while the first group starts.
        "cold_start": {"models": [md.spec.model.name for md in deployments
                                  if md.spec.autoscaling is not None and md.spec.autoscaling.min_replicas == 0]},
    }
