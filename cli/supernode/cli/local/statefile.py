"""The state directory: what `supernode up` is running, for `supernode status` and for tests.

Layout of `--state-dir` (default `.supernode/`):
  state.json        this module's `LocalState` (router URL, every pid, group phases)
  endpoints.json    the router's `local` discovery file (`supernode.api.endpoints.EndpointFile`)
  router.yaml       the router config `supernode up` wrote
  usage.sqlite      the router's usage ledger (survives router restarts)
  admin.key         the admin API key `supernode up` generated (0600; unless SUPERNODE_ADMIN_KEY is set)
  checkpoints/      builtin:// checkpoints, created once
  logs/             one log per rank and one for the router
The folder and logs/ are 0700, every file in them 0600.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from supernode.api.endpoints import EndpointFile
from supernode.cli.local.secrets import write_private

STATE_FILE = "state.json"
ENDPOINTS_FILE = "endpoints.json"
ROUTER_CONFIG = "router.yaml"
LEDGER_FILE = "usage.sqlite"


class RankRecord(BaseModel):
    rank: int
    pid: int | None = None


class GroupRecord(BaseModel):
    deployment: str
    group: int
    model: str
    url: str
    phase: str
    restarts: int = 0
    reason: str = ""
    ranks: list[RankRecord] = Field(default_factory=list)


class LocalState(BaseModel):
    up_pid: int
    router_url: str
    router_pid: int | None = None
    router_phase: str = "Pending"
    router_restarts: int = 0
    groups: list[GroupRecord] = Field(default_factory=list)
    # Per autoscaled deployment: desired, active, ready, reason, message, coldStartSeconds, signals.
    autoscaling: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def pids(self) -> list[int]:
        out = [self.up_pid]
        if self.router_pid:
            out.append(self.router_pid)
        out.extend(r.pid for g in self.groups for r in g.ranks if r.pid)
        return out


def write_atomic(path: Path, text: str) -> None:
    """Readers (the router, `status`) never see a half-written file; files are 0600 (they name ports,
    pids and the tenants file; the router config is read by the router only)."""
    write_private(path, text)


def save_state(state_dir: Path, state: LocalState) -> None:
    write_atomic(state_dir / STATE_FILE, state.model_dump_json(indent=2))


def load_state(state_dir: Path) -> LocalState | None:
    try:
        return LocalState.model_validate_json((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def save_endpoints(state_dir: Path, endpoints: EndpointFile) -> None:
    write_atomic(state_dir / ENDPOINTS_FILE,
                 json.dumps(endpoints.model_dump(by_alias=True, mode="json"), indent=2))
