"""A mixed-pool deployment on this machine: `supernode up examples/local-mixed/mixed.yaml` runs two CPU
"pools" (a 2-rank tensor-parallel group weighted 2 and a 1-rank group) of one model behind the real
router; it serves through both, and keeps serving while one whole pool is killed and restarted.

Its own stack (not the session one): needs the local runtime's pool support, router discovery of the
pool and weight, retries before the first byte, and gang restarts."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
from upstack import ROOT, UpLauncher, UpStack

from supernode.cli.local.statefile import ENDPOINTS_FILE

SPEC = ROOT / "examples" / "local-mixed" / "mixed.yaml"
MODEL = "deepseek-v4-flash"
NON_THINK = {"thinking": {"type": "disabled"}}


class MixedStack(UpStack):
    def ask(self, text: str) -> str:
        """One short completion through the router; the group that served it (`deployment/pool/group`)."""
        raw = self.openai().chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=2, extra_body=NON_THINK)
        assert raw.parse().usage is not None
        return str(raw.headers["x-supernode-endpoint"])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedStack]:
    with UpLauncher(tmp_path_factory.mktemp("mixed"), MixedStack).spec(SPEC).drain(2).run() as stack:
        yield stack


def test_both_pools_are_published_with_their_pool_and_weight_and_both_serve(mixed: MixedStack) -> None:
    groups = mixed.groups()
    assert {"mixed/big", "mixed/small"} <= set(groups), groups
    assert len(groups["mixed/big"].ranks) == 2 and len(groups["mixed/small"].ranks) == 1
    published = json.loads((mixed.state_dir / ENDPOINTS_FILE).read_text())["endpoints"]
    assert sorted((e["pool"], e["capacityWeight"]) for e in published) == [("big", 2.0), ("small", 1.0)]
    served = {mixed.ask(f"distinct question {i} about pools") for i in range(12)}
    assert served == {"mixed/big/0", "mixed/small/0"}, served


def test_losing_a_whole_pool_keeps_serving_from_the_other_and_the_pool_comes_back(mixed: MixedStack) -> None:
    before = mixed.groups()["mixed/big"]
    for rank in before.ranks:
        assert rank.pid is not None
        os.kill(rank.pid, signal.SIGKILL)
    small = "mixed/small/0"
    # Every request while the big pool is down is answered (the router retries before the first byte).
    served = [mixed.ask(f"while big is down {i}") for i in range(6)]
    assert set(served) == {small}, served
    mixed.wait_for("the big pool to be restarted and ready",
                   lambda: mixed.groups()["mixed/big"].restarts >= 1 and mixed.groups()["mixed/big"].phase == "Ready",
                   180)
    assert {r.pid for r in mixed.groups()["mixed/big"].ranks}.isdisjoint({r.pid for r in before.ranks})
    mixed.wait_for("the big pool to serve again",
                   lambda: mixed.ask("back again " + str(time.monotonic())) == "mixed/big/0", 60)
