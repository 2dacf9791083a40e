"""`supernode engine serve --nproc-per-node` defaults to the pod's device count on accelerators."""

from __future__ import annotations

import argparse

import pytest

from supernode.api import constants as C
from supernode.cli.engine_serve import _nproc_per_node


def _args(device: str, nproc: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(device=device, nproc_per_node=nproc)


@pytest.mark.parametrize(
    ("device", "flag", "env", "want"),
    [
        ("cuda", None, "8", 8),  # operator pod: 8 GPUs, one rank each
        ("npu", None, "16", 16),
        ("cuda", 2, "8", 2),  # the flag wins
        ("cpu", None, "0", 1),  # cpu pods are one rank
        ("cpu", None, "4", 1),
        ("cuda", None, None, 1),  # run by hand outside a pod
        ("cuda", None, "0", 1),
    ],
)
def test_nproc_per_node(
    monkeypatch: pytest.MonkeyPatch, device: str, flag: int | None, env: str | None, want: int
) -> None:
    if env is None:
        monkeypatch.delenv(C.ENV_DEVICES_PER_POD, raising=False)
    else:
        monkeypatch.setenv(C.ENV_DEVICES_PER_POD, env)
    assert _nproc_per_node(_args(device, flag)) == want


def test_nproc_per_node_bad_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(C.ENV_DEVICES_PER_POD, "eight")
    with pytest.raises(ValueError, match=C.ENV_DEVICES_PER_POD):
        _nproc_per_node(_args("cuda"))
