"""Real-cluster e2e (kind / k3d with LeaderWorkerSet): skipped unless a cluster is configured.

SUPERNODE_E2E_KUBECONFIG=path (any cluster you are willing to install into), or KUBECONFIG whose
current context is a kind-/k3d- cluster. See e2e/cluster/README.md; never part of CI here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for cluster_support

from cluster_support import Cluster, connect, kubeconfig_from_env

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    path, explicit = kubeconfig_from_env()
    if path is None:
        pytest.skip("no cluster configured: set SUPERNODE_E2E_KUBECONFIG (see e2e/cluster/README.md)")
    found = connect(path, explicit=explicit)
    if isinstance(found, str):
        pytest.skip(found)
    return found
