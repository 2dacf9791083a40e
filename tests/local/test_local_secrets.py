"""`supernode up` secrets: a per-run engine token in a 0600 file, a fresh store secret per group start."""

from __future__ import annotations

import stat
from pathlib import Path

from supernode.api import constants as C
from supernode.cli.local.secrets import group_env, write_engine_token


def test_engine_token_is_fresh_per_run_and_only_owner_readable(tmp_path: Path) -> None:
    (tmp_path / "engine-token").write_text("old\n")
    (tmp_path / "engine-token").chmod(0o644)
    first, path = write_engine_token(tmp_path)
    assert path.read_text().strip() == first and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second, _ = write_engine_token(tmp_path)
    assert second != first and path.read_text().strip() == second


def test_each_group_start_gets_its_own_store_secret() -> None:
    a, b = group_env("tok" * 8), group_env(None)
    assert a[C.ENV_GROUP_SECRET] != b[C.ENV_GROUP_SECRET] and len(a[C.ENV_GROUP_SECRET]) >= 32
    assert a[C.ENV_ENGINE_TOKEN] == "tok" * 8 and C.ENV_ENGINE_TOKEN not in b
