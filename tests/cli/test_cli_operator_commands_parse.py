"""The commands the operator renders for builtin-engine pods are ones `supernode` accepts (checked
against the committed golden manifest, which tests/operator keeps equal to what the builders render)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from supernode.cli.main import build_parser

GOLDEN = Path(__file__).resolve().parents[1] / "operator" / "golden" / "builtin-cpu-sts.yaml"


def _pod_spec() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(GOLDEN.read_text()) if d]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    return sts["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _parse(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    for e in container.get("env", []):
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    argv = [*container["command"], *container.get("args", [])]
    assert argv[0] == "supernode"
    return build_parser().parse_args(argv[1:])  # env-backed defaults are read when the parser is built


def test_the_init_container_command_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    (init,) = _pod_spec()["initContainers"]
    args = _parse(init, monkeypatch)
    assert (args.dir, args.preset) == ("/models", "tiny")


def test_the_engine_command_parses_with_the_pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _pod_spec()["containers"][0]
    args = _parse(engine, monkeypatch)
    assert (args.model_dir, args.host, args.device) == ("/models", "0.0.0.0", "cpu")
    assert args.served_model_name == "deepseek-v4-flash"
