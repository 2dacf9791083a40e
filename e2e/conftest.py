"""One `supernode up` on examples/local for the whole e2e session (real engine ranks over gloo, the
real router, the real tenants file), driven through the official OpenAI and Anthropic SDKs. Stacks of
their own (mixed pools, precise routing) start through the same launcher (`upstack.UpLauncher`).

Needs: engine (`engine serve`, `init-checkpoint`), router (`router --config`, local discovery,
OpenAI + Anthropic APIs), admission + metering, planner. A missing part fails the session fixture
(and so every test) with the `supernode up` output — nothing is skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# e2e support modules (upstack) and the tests' fluent builders (builders.make_md), whatever the cwd
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstack import ROOT, UpLauncher, UpStack

EXAMPLES = ROOT / "examples" / "local"
START_TIMEOUT = 240.0


class Stack(UpStack):
    """The session stack; tests reach keys and model names through it (e2e files import nothing
    from each other)."""

    ACME_KEY = "sk-local-acme-premium-0001"  # premium tier (examples/local/tenants.yaml)
    HOBBY_KEY = "sk-local-hobby-free-0002"  # free tier, rpm 12
    PRO = "deepseek-v4-pro"
    FLASH = "deepseek-v4-flash"

    def usage_rows(self, tenant: str) -> list[dict[str, object]]:
        r = httpx.get(f"{self.url}/admin/usage", params={"tenant": tenant, "view": "rows"},
                      headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10)
        assert r.status_code == 200, r.text
        return list(r.json()["rows"])


@pytest.fixture(scope="session", autouse=True)
def shared_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    UpLauncher.checkpoint_cache = tmp_path_factory.mktemp("checkpoints")
    yield
    UpLauncher.checkpoint_cache = None


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    launcher = (UpLauncher(tmp_path_factory.mktemp("supernode"), Stack)
                .spec(EXAMPLES / "pro.yaml", EXAMPLES / "flash.yaml")
                .tenants(EXAMPLES / "tenants.yaml", Stack.ACME_KEY)
                .start_timeout(START_TIMEOUT).drain(5))
    with launcher.run() as s:
        yield s

