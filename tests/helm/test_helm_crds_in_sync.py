"""One source for the CRDs: the chart ships exactly what supernode.api generates (byte for byte), so a
model change without `scripts/sync-chart-crds.sh` fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helm_chart_support import CHART, REPO

from supernode.api import crdgen

SYNC = REPO / "scripts" / "sync-chart-crds.sh"


def test_chart_crd_is_the_generated_one_byte_for_byte() -> None:
    generated = crdgen.render_yaml()
    chart_copy = (CHART / "crds" / crdgen.CRD_FILE).read_text()
    assert chart_copy == generated, "helm/supernode/crds is stale: run scripts/sync-chart-crds.sh"
    assert (REPO / "crds" / crdgen.CRD_FILE).read_text() == chart_copy


def test_chart_ships_every_repo_crd_and_nothing_else() -> None:
    repo_crds = {p.name for p in (REPO / "crds").glob("*.yaml")}
    chart_crds = {p.name for p in (CHART / "crds").glob("*.yaml")}
    assert chart_crds == repo_crds
    for name in repo_crds:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), name


def test_loaded_chart_crd_equals_crd_manifest(chart: Any) -> None:
    ours = [e for e in chart.crds if e["filename"].endswith(crdgen.CRD_FILE)]
    assert len(ours) == 1
    assert yaml.safe_load(ours[0]["data"]) == crdgen.crd_manifest()


def test_sync_script_check_mode_passes_and_detects_drift(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    ok = subprocess.run(["bash", str(SYNC), "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    # Drift, in a scratch copy of the layout the script works on: --check must fail and name the file.
    (tmp_path / "scripts").mkdir()
    shutil.copy(SYNC, tmp_path / "scripts" / SYNC.name)
    (tmp_path / "crds").mkdir()
    (tmp_path / "helm" / "supernode" / "crds").mkdir(parents=True)
    generated = crdgen.render_yaml()
    (tmp_path / "crds" / crdgen.CRD_FILE).write_text(generated)
    (tmp_path / "helm" / "supernode" / "crds" / crdgen.CRD_FILE).write_text(generated + "# drift\n")
    script = tmp_path / "scripts" / SYNC.name
    bad = subprocess.run(["bash", str(script), "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "helm/supernode/crds/modeldeployment.yaml is stale" in bad.stderr
    fixed = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert fixed.returncode == 0, fixed.stderr
    assert (tmp_path / "helm" / "supernode" / "crds" / crdgen.CRD_FILE).read_text() == generated
