"""Helpers over rendered chart objects, shared by tests/helm (imported via conftest's sys.path entry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "supernode"
EXAMPLES = sorted((CHART / "examples").glob("values-*.yaml"))
RELEASE = "sn"
NAMESPACE = "supernode-system"

Objects = list[dict[str, Any]]


def parse_manifests(rendered: dict[str, str]) -> Objects:
    """Every Kubernetes object in a render result (NOTES.txt and empty documents dropped)."""
    objects: Objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: a manifest must be a mapping"
                doc.setdefault("metadata", {})
                objects.append(doc)
    return objects


def load_values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path} must hold a mapping"
    return loaded


def find(objects: Objects, kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and o["metadata"].get("name", "").endswith(name_suffix)]


def one(objects: Objects, kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = find(objects, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_templates(objects: Objects) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) for every workload that carries a pod template."""
    out = []
    for o in objects:
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            out.append((f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]))
        elif o["kind"] == "CronJob":
            out.append((f"CronJob/{o['metadata']['name']}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def with_auth_choice(values: dict[str, Any] | None) -> dict[str, Any]:
    """The chart refuses a router with neither tenants nor an explicit `anonymous: true` (issue 10); tests
    that do not care about tenants say anonymous (tests/helm/test_helm_router_config.py covers the rule)."""
    out = dict(values or {})
    router = dict(out.get("router") or {})
    if "tenants" not in router:
        router["tenants"] = {"anonymous": True}
        out["router"] = router
    return out
