"""The committed CRD is what the models generate, and it is a valid, structural CRD."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from supernode.api import constants as C
from supernode.api import crdgen, rules

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / crdgen.CRD_FILE


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_committed_crd_is_not_stale() -> None:
    assert CRD_PATH.read_text() == crdgen.render_yaml(), (
        "crds/modeldeployment.yaml is stale; run `python -m supernode.cli crds`")


def test_crds_check_flags_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "md.yaml"
    stale.write_text(crdgen.render_yaml().replace("shortNames", "shortNamez"))
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "supernode.cli", "crds", "--check", "-o"]
    bad = subprocess.run([*cmd, str(stale)], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "stale" in bad.stderr
    subprocess.run([sys.executable, "-m", "supernode.cli", "crds", "-o", str(stale)], env=env, check=True,
                   capture_output=True, timeout=60)
    good = subprocess.run([*cmd, str(stale)], env=env, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr


def test_crd_is_valid_against_the_kubernetes_openapi() -> None:
    kubernetes_validate.validate(crd_manifest_from_file(), kubernetes_validate.latest_version(), strict=True)


def crd_manifest_from_file() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())  # type: ignore[no-any-return]


def test_schema_is_structural() -> None:
    schema = crdgen.openapi_schema()
    for path, node in _walk(schema):
        if path.endswith("/properties") or path.endswith("/default") or "/default/" in path:
            continue  # a properties map, or a default value: not schema nodes
        if path.endswith("x-kubernetes-validations") or "x-kubernetes-validations[" in path:
            continue
        forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "title", "nullable"} & set(node)
        assert not forbidden, f"{path}: {forbidden}"
        assert "type" in node, f"{path}: every schema node needs a type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "string" and "enum" in node:
            assert "maxLength" in node, f"{path}: bound enum strings for CEL cost estimation"


def test_defaults_enums_bounds_and_descriptions_are_rendered() -> None:
    spec = crdgen.spec_schema()["properties"]
    assert spec["replicas"]["default"] == 1 and spec["replicas"]["minimum"] == 0
    assert spec["accelerator"]["properties"]["type"]["enum"][-1] == "cpu"
    assert spec["placement"]["properties"]["supernode"]["enum"] == ["Required", "Preferred", "None"]
    assert spec["placement"]["properties"]["supernode"]["default"] == "Preferred"
    assert spec["parallelism"]["default"] == {} and spec["parallelism"]["properties"]["tensor"]["default"] == 1
    assert spec["modes"]["default"] == list(C.MODES)
    assert spec["modes"]["x-kubernetes-list-type"] == "set"
    assert spec["model"]["properties"]["source"]["pattern"].startswith("^(pvc|hf|s3|builtin)")
    assert set(crdgen.spec_schema()["required"]) == {"model", "accelerator"}
    for name in ("model", "accelerator", "parallelism", "placement", "replicas", "modes", "rollout"):
        assert spec[name].get("description"), name


def test_cel_rules_come_from_the_shared_rule_table() -> None:
    rendered = crdgen.spec_schema()["x-kubernetes-validations"]
    assert [(r["rule"], r["message"], r["fieldPath"]) for r in rendered] == [
        (r.cel, r.message, r.field_path) for r in rules.RULES]
    for rule in rules.RULES:
        field = rule.field_path.lstrip(".").split(".")[0]
        assert field in rule.message, f"{rule.name}: message must name the field"


def test_scale_and_status_subresources_printer_columns_and_names() -> None:
    crd = crdgen.crd_manifest()
    assert crd["metadata"]["name"] == "modeldeployments.supernode.io"
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["md"] and "supernode" in names["categories"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Model": ".spec.model.name", "Accelerator": ".spec.accelerator.type", "Ready": ".status.readyReplicas",
        "Desired": ".spec.replicas", "Placeable": ".status.placeableReplicas", "Pools": ".status.poolSummary",
        "Devices": ".spec.accelerator.devicesPerPod", "Age": ".metadata.creationTimestamp"}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    for field in ("observedGeneration", "replicas", "readyReplicas", "updatedReplicas", "placeableReplicas",
                  "selector", "groups"):
        assert field in status


@pytest.mark.parametrize("path", sorted(str(p) for p in ROOT.joinpath("crds").glob("*.yaml")))
def test_every_committed_crd_file_parses(path: str) -> None:
    assert yaml.safe_load(Path(path).read_text())["kind"] == "CustomResourceDefinition"


def _field_paths(schema: dict[str, Any], path: str) -> list[str]:
    out = []
    for key, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{key}"
        out.append(here)
        out += _field_paths(sub, here)
        if isinstance(sub.get("items"), dict):
            out += _field_paths(sub["items"], here + "[]")
    return out


def test_api_docs_cover_every_spec_field_and_rule() -> None:
    doc = (ROOT / "docs" / "api.md").read_text()
    missing = [p for p in _field_paths(crdgen.spec_schema(), "spec") if f"`{p}`" not in doc]
    assert not missing, f"docs/api.md lacks {missing}"
    for rule in rules.RULES:
        assert rule.message in doc and f"`{rule.name}`" in doc, rule.name
