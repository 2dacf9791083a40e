"""The real-cluster suite (e2e/cluster) collects everywhere and skips cleanly without a usable,
safe cluster: no kubeconfig, an unreachable one, or a non-kind/k3d context taken from KUBECONFIG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helm_chart_support import REPO

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:1"}}}}]
users: [{{name: u, user: {{token: x}}}}]
contexts: [{{name: {context}, context: {{cluster: c, user: u}}}}]
current-context: {context}
"""


def run_suite(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "SUPERNODE_E2E_KUBECONFIG"}}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "e2e/cluster"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("case", "context", "var", "reason"),
    [
        ("nothing configured", None, None, "no cluster configured"),
        ("unreachable kind cluster", "kind-e2e", "KUBECONFIG", "is not reachable"),
        ("production context via KUBECONFIG", "prod-eu", "KUBECONFIG", "is not a kind-/k3d- cluster"),
    ],
)
def test_cluster_suite_skips(tmp_path: Path, case: str, context: str | None, var: str | None, reason: str) -> None:
    env: dict[str, str] = {}
    if context and var:
        path = tmp_path / "kubeconfig"
        path.write_text(KUBECONFIG.format(context=context))
        env[var] = str(path)
    result = run_suite(env)
    assert result.returncode == 0, f"{case}:\n{result.stdout}\n{result.stderr}"
    summary = result.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary, f"{case}: {summary}"
    assert reason in result.stdout, f"{case}: {result.stdout}"
