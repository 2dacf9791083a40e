"""The real-cluster suite (e2e/cluster) collects everywhere and skips cleanly without a usable,
safe cluster: no kubeconfig, an unreachable one, or a non-kind/k3d context taken from KUBECONFIG."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helm_chart_support import REPO

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:1"}}}}]
users: [{{name: u, user: {{token: x}}}}]
contexts: [{{name: {context}, context: {{cluster: c, user: u}}}}]
current-context: {context}
"""


CASES = [
    ("nothing configured", None, None, "no cluster configured"),
    ("unreachable kind cluster", "kind-e2e", "KUBECONFIG", "is not reachable"),
    ("production context via KUBECONFIG", "prod-eu", "KUBECONFIG", "is not a kind-/k3d- cluster"),
]


def start_suite(env_extra: dict[str, str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "SUPERNODE_E2E_KUBECONFIG"}}
    env.update(env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "e2e/cluster"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Every case's run of the cluster suite (return code, stdout, stderr), the three started at once:
    each is ~3 s of pytest start-up and collection, which the cores share instead of taking in turn."""
    procs: dict[str, subprocess.Popen[str]] = {}
    for case, context, var, _ in CASES:
        env: dict[str, str] = {}
        if context and var:
            path = tmp_path_factory.mktemp("kubeconfig") / "kubeconfig"
            path.write_text(KUBECONFIG.format(context=context))
            env[var] = str(path)
        procs[case] = start_suite(env)
    runs: dict[str, tuple[int, str, str]] = {}
    try:
        for case, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            runs[case] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return runs


@pytest.mark.parametrize(("case", "context", "var", "reason"), CASES)
def test_cluster_suite_skips(suite_runs: dict[str, tuple[int, str, str]], case: str, context: str | None,
                             var: str | None, reason: str) -> None:
    returncode, stdout, stderr = suite_runs[case]
    assert returncode == 0, f"{case}:\n{stdout}\n{stderr}"
    summary = stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary, f"{case}: {summary}"
    assert reason in stdout, f"{case}: {stdout}"
