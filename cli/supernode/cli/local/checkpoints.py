"""`builtin://PRESET` checkpoints, created once under the state dir by the engine's own CLI."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


class CheckpointError(Exception):
    pass


def ensure_checkpoint(state_dir: Path, preset: str, *, python: str, out: Callable[[str], None]) -> Path:
    """The checkpoint dir for `preset`, created when missing. Written to a temp dir and renamed, so a
    dir that exists is complete (an interrupted creation leaves no half checkpoint behind)."""
    target = state_dir / "checkpoints" / preset
    if target.is_dir():
        return target
    tmp = target.with_name(f".{preset}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    out(f"creating checkpoint builtin://{preset} in {target} ...")
    argv = [python, "-m", "supernode.cli", "engine", "init-checkpoint", str(tmp), "--preset", preset]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise CheckpointError(f"builtin://{preset}: checkpoint creation failed: " + " | ".join(detail))
    tmp.rename(target)
    return target
