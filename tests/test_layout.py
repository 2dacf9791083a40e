"""The import layout promise: no top-level `operator` package shadows the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stdlib_operator_not_shadowed_from_repo_root() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator, collections; print(operator.__file__)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert "site-packages" not in out.stdout or "supernode" not in out.stdout
    assert not out.stdout.strip().startswith(str(ROOT / "operator"))


def test_stdlib_operator_not_shadowed_under_python_m() -> None:
    code = "import operator; assert hasattr(operator, 'itemgetter'), operator.__file__"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    subprocess.run([sys.executable, "-m", "supernode.cli", "--help"], cwd=ROOT, check=True,
                   capture_output=True)


def test_supernode_is_a_namespace_spanning_components() -> None:
    import importlib

    import supernode

    assert getattr(supernode, "__file__", None) is None, "supernode must be a PEP 420 namespace"
    for folder, package in [("crds", "api"), ("operator", "operator"), ("engine", "engine"),
                            ("router", "router"), ("cli", "cli")]:
        module = importlib.import_module(f"supernode.{package}")
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().is_relative_to(ROOT / folder)


def test_control_plane_imports_without_torch() -> None:
    code = (
        "import sys; import supernode.api.models, supernode.api.hashing, supernode.cli.main;"
        "supernode.cli.main.build_parser();"
        "assert 'torch' not in sys.modules, 'control plane imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
