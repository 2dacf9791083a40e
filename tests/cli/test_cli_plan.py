"""`supernode plan` end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def supernode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supernode.cli", *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def test_plan_prints_a_table_of_groups_ranks_nodes_and_devices() -> None:
    out = supernode("plan", "examples/v4-pro-ascend-910c.yaml",
                    "--inventory", "examples/inventories/ascend-3-superpods.yaml")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ModelDeployment v4-pro: 3 of 3 group(s) placeable; 2 pod(s) x 16 huawei.com/Ascend910")
    assert lines[1].split() == ["GROUP", "SUPERNODE", "RANK", "ROLE", "NODE", "DEVICES"]
    assert lines[2].split() == ["0", "sp-2", "0", "leader", "sp-2-a3-0", "16"]
    assert lines[3].split() == ["1", "worker", "sp-2-a3-1", "16"]
    assert "note: 1 of 13 nodes excluded: 1 no huawei.com/Ascend910" in lines


def test_plan_explains_why_groups_do_not_fit(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples/v4-pro-ascend-910c.yaml").read_text())
    doc["spec"]["replicas"] = 7
    doc["spec"]["autoscaling"]["maxReplicas"] = 8
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = supernode("plan", str(path), "--inventory", "examples/inventories/ascend-3-superpods.yaml")
    assert out.returncode == 0, out.stderr
    assert "5 of 7 group(s) placeable" in out.stdout
    assert ("CapacityLimited: groups 5, 6: needs 2 pods x 16 huawei.com/Ascend910 in one supernode; "
            "best supernode sp-2 has room for 1 pod") in out.stdout
    assert "  5      (not placed)  0     leader  -" in out.stdout


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_plan_machine_readable_output(fmt: str) -> None:
    out = supernode("plan", "examples/v4-flash-h200.yaml", "--inventory", "examples/inventories/h200-pool.yaml",
                    "-o", fmt)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout) if fmt == "json" else yaml.safe_load(out.stdout)
    (p,) = data["plans"]
    assert p["deployment"] == "v4-flash" and p["capacity"] == {
        "desired": 4, "placeable": 4, "reasons": [], "limited": False}
    assert sorted(g["pods"][0]["node"] for g in p["groups"]) == ["h200-0", "h200-0", "h200-1", "h200-2"]
    assert p["groups"][0]["pods"][0]["env"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_plan_without_inventory_uses_this_machine_for_cpu_specs() -> None:
    out = supernode("plan", "examples/tiny-cpu.yaml", "-o", "json")
    assert out.returncode == 0, out.stderr
    (p,) = json.loads(out.stdout)["plans"]
    assert p["capacity"]["placeable"] == 1 and p["resource_name"] is None
    assert len({pod["node"] for pod in p["groups"][0]["pods"]}) == 1


def test_plan_without_inventory_for_accelerators_asks_for_one() -> None:
    out = supernode("plan", "examples/v4-pro-ascend-910c.yaml")
    assert out.returncode == 2
    assert "v4-pro need accelerator nodes; pass --inventory FILE" in out.stderr


def test_multiple_documents_are_planned_against_what_earlier_ones_left(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples/v4-pro-ascend-910c.yaml").read_text())
    second = yaml.safe_load(yaml.safe_dump(doc))
    second["metadata"]["name"] = "v4-pro-b"
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([doc, {"apiVersion": "v1", "kind": "ConfigMap"}, second]))
    out = supernode("plan", str(path), "--inventory", "examples/inventories/ascend-3-superpods.yaml", "-o", "json")
    first, later = json.loads(out.stdout)["plans"]
    assert first["capacity"]["placeable"] == 3
    assert later["capacity"]["placeable"] == 2, "sp-0 and sp-1 have 2 nodes left each, sp-2 none"


@pytest.mark.parametrize(("content", "expected"), [
    ("spec: [unclosed", "invalid YAML: line 1, column"),
    ("- a\n- b\n", "expected a mapping (a ModelDeployment), got list"),
    ("kind: ConfigMap\n", "no ModelDeployment found"),
    ("metadata: {name: x}\nspec:\n  model: {name: m, source: builtin://t}\n  accelerator: {type: cpu}\n"
     "  parallelism: {tensor: 0}\n", "spec.parallelism.tensor: Input should be greater than or equal to 1"),
    ("metadata: {name: x}\nspec:\n  model: {name: m, source: builtin://t}\n"
     "  accelerator: {type: ascend-910c, devicesPerPod: 16}\n  parallelism: {tensor: 12}\n",
     "spec.parallelism: parallelism: tensor x pipeline x data must be a multiple of accelerator.devicesPerPod"),
    ("metadata: {name: x}\nspec:\n  model: {name: m, source: builtin://t}\n  accelerator: {type: cpu}\n"
     "  replicaz: 2\n", "spec.replicaz: Extra inputs are not permitted"),
    ("metadata: {name: Bad_Name}\nspec: {}\n", "metadata.name: String should match pattern"),
])
def test_bad_input_prints_the_field_and_reason_and_exits_2(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    out = supernode("plan", str(path))
    assert out.returncode == 2
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_missing_files_are_reported_not_raised(tmp_path: Path) -> None:
    out = supernode("plan", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "cannot read" in out.stderr and "Traceback" not in out.stderr
    bad_inventory = tmp_path / "inv.yaml"
    bad_inventory.write_text("just a string\n")
    out = supernode("plan", "examples/tiny-cpu.yaml", "--inventory", str(bad_inventory))
    assert out.returncode == 2 and "an inventory is a mapping" in out.stderr


def test_plan_rollout_previews_steps_like_the_operator(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples/v4-pro-ascend-910c.yaml").read_text())
    doc["spec"]["replicas"] = 2
    doc["spec"]["rollout"] = {"maxSurge": 1, "maxUnavailable": 0, "drainTimeoutSeconds": 60}
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = supernode("plan", str(path), "--rollout")  # no inventory needed for a rollout preview
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("v4-pro: 2 groups, maxSurge 1, maxUnavailable 0, drain 60s")
    assert "peak groups 3, lowest ready 2" in out.stdout
    same = supernode("operator", "preview-rollout", str(path))
    assert same.returncode == 0 and same.stdout == out.stdout, "one implementation behind both commands"
    data = json.loads(supernode("plan", str(path), "--rollout", "-o", "json", "--ready-seconds", "60").stdout)
    steps = data["rollouts"][0]["steps"]
    assert max(s["groups"] for s in steps) == 3 and min(s["ready"] for s in steps) == 2
    assert sorted(g for s in steps for g in s["delete"]) == sorted(g for s in steps for g in s["drain"])
    assert len(sorted(g for s in steps for g in s["delete"])) == 2, "both old groups drained then deleted"


def test_plan_rollout_bad_input_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "md.yaml"
    path.write_text("apiVersion: supernode.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\nspec: {}\n")
    out = supernode("plan", str(path), "--rollout")
    assert out.returncode == 2 and f"{path}: spec" in out.stderr, out.stderr


def test_plan_of_a_mixed_pool_deployment_shows_each_pool_and_the_short_one() -> None:
    out = supernode("plan", "examples/v4-flash-mixed-pools.yaml",
                    "--inventory", "examples/inventories/mixed-ascend-h200.yaml")
    assert out.returncode == 0, out.stderr
    heads = [line for line in out.stdout.splitlines() if line.startswith("ModelDeployment ")]
    assert [h.split(";")[0] for h in heads] == [
        "ModelDeployment v4-flash-mixed pool ascend: 2 of 2 group(s) placeable",
        "ModelDeployment v4-flash-mixed pool h200: 1 of 2 group(s) placeable"]
    assert "CapacityLimited: group 1: needs 1 pod x 8 nvidia.com/gpu" in out.stdout
    rollout = supernode("plan", "examples/v4-flash-mixed-pools.yaml", "--rollout")
    assert rollout.returncode == 0, rollout.stderr
    assert "v4-flash-mixed pool ascend: 2 groups" in rollout.stdout
    assert "v4-flash-mixed pool h200: 2 groups" in rollout.stdout
