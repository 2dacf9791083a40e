"""Operator test helpers live next to the tests (k8s_emulator, builders); make them importable."""

import sys
from pathlib import Path

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from collections.abc import AsyncIterator  # noqa: E402

import kmock  # noqa: E402
import pytest  # noqa: E402
from k8s_emulator import K8sEmulator  # noqa: E402


@pytest.fixture
async def k8s() -> AsyncIterator[tuple[K8sEmulator, str]]:
    """The test Kubernetes API on 127.0.0.1: (emulator, base URL)."""
    async with K8sEmulator(strict=False) as emu, kmock.Server(emu) as srv:
        yield emu, str(srv.url).rstrip("/")
        emu.close_watches()
