"""The real-cluster path beyond the chart: what the operator applies (its golden manifests for every
engine type and accelerator) is valid against the Kubernetes OpenAPI schemas, strict (unknown fields
fail), so an API server would accept it. LeaderWorkerSet pod templates are checked as Pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_chart_support import REPO

GOLDEN = sorted((REPO / "tests" / "operator" / "golden").glob("*.yaml"))
K8S_VERSION = kubernetes_validate.utils.latest_version()


def as_pod(template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {**template.get("metadata", {}), "name": "probe"},
            "spec": template["spec"]}


def test_goldens_exist() -> None:
    assert len(GOLDEN) >= 4, "the operator's golden manifests are missing (tests/operator/golden)"


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_operator_manifests_validate(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        if doc["kind"] == "LeaderWorkerSet":
            lwt = doc["spec"]["leaderWorkerTemplate"]
            objects = [as_pod(t) for t in (lwt.get("leaderTemplate"), lwt["workerTemplate"]) if t]
        else:
            objects = [doc]
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
