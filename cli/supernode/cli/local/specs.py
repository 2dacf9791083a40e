"""Read ModelDeployment YAML files for the local runtime; errors name the file, the field and why."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from supernode.api.capabilities import engine_shape_problem
from supernode.api.models import EngineType, ModelDeployment
from supernode.api.pools import pool_views
from supernode.cli.plan import validation_lines

BUILTIN_SCHEME = "builtin://"


class SpecError(Exception):
    """One or more problems with the given files; `problems` are `file: field: reason` lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _local_problems(md: ModelDeployment) -> list[str]:
    """What the local runtime cannot run even though the spec is valid for a cluster (each pool checked)."""
    problems = []
    if not md.spec.model.source.startswith(BUILTIN_SCHEME):
        problems.append(
            f"spec.model.source: {md.spec.model.source!r} is not available locally; use builtin://PRESET (e.g. tiny)")
    for view in pool_views(md):
        where = f"pool {view.name}: " if view.name else ""
        engine = view.md.spec.engine.type
        if engine is not EngineType.BUILTIN:
            problems.append(f"{where}spec.engine.type: {engine.value!r} needs a cluster; locally only 'builtin' runs")
        if shape := engine_shape_problem(view.md.spec):
            problems.append(f"{where}{shape}")
    return problems


def parse_documents(text: str, origin: str) -> list[ModelDeployment]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([f"{origin}: not valid YAML: {exc}"]) from exc
    out: list[ModelDeployment] = []
    problems: list[str] = []
    for i, doc in enumerate(docs):
        where = origin if len(docs) == 1 else f"{origin} (document {i + 1})"
        if not isinstance(doc, dict) or doc.get("kind") != "ModelDeployment":
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            problems.append(f"{where}: kind: expected ModelDeployment, got {kind!r}")
            continue
        try:
            md = ModelDeployment.from_obj(_without_status(doc))
        except ValidationError as exc:
            problems.extend(validation_lines(where, exc))
            continue
        local = _local_problems(md)
        problems.extend(f"{where}: {p}" for p in local)
        if not local:
            out.append(md)
    if problems:
        raise SpecError(problems)
    return out


def _without_status(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "status"}


def load_deployments(paths: Iterable[str | Path]) -> list[ModelDeployment]:
    """All ModelDeployments of all files; every problem is reported, not just the first."""
    out: list[ModelDeployment] = []
    problems: list[str] = []
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            problems.append(f"{p}: cannot read: {exc.strerror or exc}")
            continue
        try:
            out.extend(parse_documents(text, str(p)))
        except SpecError as exc:
            problems.extend(exc.problems)
    names: dict[str, int] = {}
    for md in out:
        names[md.metadata.name] = names.get(md.metadata.name, 0) + 1
    problems.extend(f"metadata.name: {n!r} is used by {c} deployments" for n, c in names.items() if c > 1)
    if not out and not problems:
        problems.append("no ModelDeployment found in the given files")
    if problems:
        raise SpecError(problems)
    return out


def preset_of(md: ModelDeployment) -> str:
    return md.spec.model.source.removeprefix(BUILTIN_SCHEME).strip("/")
