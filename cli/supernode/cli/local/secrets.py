"""Per-run secrets of a local stack: the router->engine token and one store secret per group start.

The engine token is written to ``<state-dir>/engine-token`` (mode 0600, replaced on every run) so an
operator of the machine can call an engine directly; it is never printed. Group secrets live only in
the environment of the group's ranks and change whenever the group is (re)started.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from supernode.api import constants as C

ENGINE_TOKEN_FILE = "engine-token"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def write_engine_token(state_dir: Path) -> tuple[str, Path]:
    """A fresh engine token, stored 0600 in the state dir; returns (token, path)."""
    token = new_secret()
    path = state_dir / ENGINE_TOKEN_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(tmp, 0o600)  # an existing file keeps its mode through O_CREAT
    os.replace(tmp, path)
    return token, path


def engine_auth_headers(state_dir: Path) -> dict[str, str]:
    """The Authorization header for this stack's engines (empty when the run wrote no token)."""
    try:
        token = (state_dir / ENGINE_TOKEN_FILE).read_text().strip()
    except OSError:
        return {}
    return {"authorization": f"Bearer {token}"} if token else {}


def group_env(engine_token: str | None) -> dict[str, str]:
    """Env for every rank of one group start: a fresh group secret (+ the engine token when set)."""
    env = {C.ENV_GROUP_SECRET: new_secret()}
    if engine_token:
        env[C.ENV_ENGINE_TOKEN] = engine_token
    return env
