"""Secrets and file modes of the state dir: the admin key, the router->engine token, group secrets.

The admin key is never printed: `supernode up` takes it from SUPERNODE_ADMIN_KEY when set, else
reuses or generates one in `<state dir>/admin.key` (mode 0600) and prints only that path. The engine
token is written to ``<state-dir>/engine-token`` (mode 0600, replaced on every run) so an operator of
the machine can call an engine directly; it is never printed. Group secrets live only in the
environment of the group's ranks and change whenever the group is (re)started.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from supernode.api import constants as C

ADMIN_KEY_FILE = "admin.key"
ENGINE_TOKEN_FILE = "engine-token"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically into a 0600 file (readers never see a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)  # an old tmp file may have had another mode
    os.replace(tmp, path)


def open_private_log(path: Path) -> int:
    """A log file descriptor opened for appending, created 0600 in a 0700 folder."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def ensure_admin_key(state_dir: Path, env_name: str,
                     environ: Mapping[str, str] | None = None) -> tuple[str, Path | None]:
    """(admin key, the file holding it or None when it came from the environment)."""
    env = os.environ if environ is None else environ
    if env.get(env_name):
        return env[env_name], None
    path = state_dir / ADMIN_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not key:
        key = f"sk-admin-{secrets.token_urlsafe(32)}"
        write_private(path, key + "\n")
    os.chmod(path, 0o600)
    return key, path


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def write_engine_token(state_dir: Path) -> tuple[str, Path]:
    """A fresh engine token, stored 0600 in the state dir; returns (token, path)."""
    token = new_secret()
    path = state_dir / ENGINE_TOKEN_FILE
    write_private(path, token + "\n")
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
