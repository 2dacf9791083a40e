"""`supernode plan FILE [--inventory FILE] [-o table|yaml|json] [--rollout]`: preview replica-group placement.

Runs the operator's pure planner on a ModelDeployment YAML (several documents are planned in
order, each against the capacity the previous ones left) and prints where every group would go
and why groups do not fit. `--rollout` instead previews the group-by-group steps a spec change would
take (the operator's rollout planner, as `supernode operator preview-rollout`; no inventory needed).
Bad input prints `FILE: field.path: reason` and exits 2.
The steps are separate functions (load, plan, render) so other flags can reuse them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supernode.api.models import ModelDeployment
    from supernode.operator.types import Inventory, Plan

FORMATS = ("table", "yaml", "json")


class PlanInputError(Exception):
    """Bad user input; `lines` are printed as is, exit code 2."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plan", help="plan replica groups for a ModelDeployment on an inventory", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="ModelDeployment YAML (one or more documents)")
    parser.add_argument("--inventory", type=Path, default=None,
                        help="inventory YAML (docs/planner.md) or `kubectl get nodes,pods -A -o yaml` output; "
                             "default: this machine as one cpu node (cpu deployments only)")
    parser.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format")
    parser.add_argument("--supernode-label", default=None,
                        help="node label with the Ascend SuperPoD id (default huawei.com/superpod-id)")
    parser.add_argument("--rollout", action="store_true",
                        help="preview the rollout steps of a spec change instead of the placement")
    parser.add_argument("--ready-seconds", type=float, default=180.0,
                        help="with --rollout: time a new group takes to become ready")


def _read_yaml_documents(path: Path) -> list[Any]:
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise PlanInputError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanInputError([f"{path}: invalid YAML: {where}{problem}"]) from None


def validation_lines(source: str, exc: Any) -> list[str]:
    """`source: field.path: reason` for each pydantic error (cross-field rules name their field)."""
    lines = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        ctx = err.get("ctx") or {}
        if err["type"] == "cross_field" and ctx.get("field_path"):
            path += ctx["field_path"]
        lines.append(f"{source}: {path or '(document)'}: {err['msg']}")
    return lines


def load_deployments(path: Path) -> list[ModelDeployment]:
    from pydantic import ValidationError

    from supernode.api.models import ModelDeployment

    deployments: list[ModelDeployment] = []
    for i, doc in enumerate(_read_yaml_documents(path)):
        source = f"{path}" if i == 0 else f"{path} (document {i + 1})"
        if not isinstance(doc, dict):
            raise PlanInputError([f"{source}: expected a mapping (a ModelDeployment), got {type(doc).__name__}"])
        if doc.get("kind", "ModelDeployment") != "ModelDeployment":
            continue
        try:
            deployments.append(ModelDeployment.from_obj(doc))
        except ValidationError as exc:
            raise PlanInputError(validation_lines(source, exc)) from None
    if not deployments:
        raise PlanInputError([f"{path}: no ModelDeployment found"])
    return deployments


def local_inventory() -> Inventory:
    """This machine as one cpu node (no accelerator devices)."""
    import socket

    from supernode.api import constants as C
    from supernode.operator.types import Inventory, NodeInfo

    host = socket.gethostname() or "localhost"
    return Inventory(nodes=(NodeInfo(name=host, labels={C.NODE_LABEL_HOSTNAME: host}),))


def load_inventory(path: Path | None, deployments: list[ModelDeployment]) -> Inventory:
    from supernode.operator.inventory import InventoryError, inventory_from_dict

    if path is None:
        from supernode.api.pools import pool_views

        needing = [md.metadata.name for md in deployments
                   if any(v.md.spec.accelerator.type.vendor != "cpu" for v in pool_views(md))]
        if needing:
            raise PlanInputError([f"supernode plan: {', '.join(needing)} need accelerator nodes; "
                                  "pass --inventory FILE (see examples/inventories/)"])
        return local_inventory()
    docs = _read_yaml_documents(path)
    if len(docs) != 1:
        raise PlanInputError([f"{path}: expected one inventory document, found {len(docs)}"])
    try:
        return inventory_from_dict(docs[0])
    except InventoryError as exc:
        raise PlanInputError([f"{path}: {exc}"]) from None


def plan_all(deployments: list[ModelDeployment], inventory: Inventory,
             supernode_label: str | None = None) -> list[Plan]:
    """Plan each deployment against what the previous ones left."""
    from supernode.operator.planner import apply_plan, plan_pools

    plans = []
    for md in deployments:
        for result in plan_pools(md, inventory, supernode_label=supernode_label):
            plans.append(result)
            inventory = apply_plan(inventory, result)
    return plans


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    import dataclasses

    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(plan)))
    data["capacity"]["limited"] = plan.capacity.limited
    return data


def render_table(plan: Plan) -> str:
    per_group = f"{plan.pods_per_group} pod(s)" + (
        f" x {plan.devices_per_pod} {plan.resource_name}" if plan.resource_name else " (cpu, no devices)")
    label = f"supernode label {plan.supernode_label}" if plan.supernode_label else "no supernodes"
    pool = f" pool {plan.pool}" if plan.pool else ""
    out = [f"ModelDeployment {plan.deployment}{pool}: {plan.capacity.placeable} of {plan.capacity.desired} "
           f"group(s) placeable; {per_group} per group; {label}"]
    rows = [("GROUP", "SUPERNODE", "RANK", "ROLE", "NODE", "DEVICES")]
    for group in plan.groups:
        where = group.supernode or ("+".join(group.supernodes) if group.supernodes else "-")
        if not group.placed:
            where = "(not placed)"
        for pod in group.pods:
            first = pod.rank == 0
            rows.append((str(group.index) if first else "", where if first else "", str(pod.rank), pod.role,
                         pod.node or "-", str(pod.devices)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if plan.capacity.reasons:
        out.append("CapacityLimited: " + ("; ".join(plan.capacity.reasons)))
    out += [f"note: {note}" for note in plan.notes]
    return "\n".join(out)


def render(plans: list[Plan], fmt: str) -> str:
    if fmt == "table":
        return "\n\n".join(render_table(p) for p in plans)
    data = {"plans": [plan_to_dict(p) for p in plans]}
    if fmt == "json":
        return json.dumps(data, indent=2)
    import yaml

    return yaml.safe_dump(data, sort_keys=False, width=120).rstrip()


def render_rollouts(deployments: list[ModelDeployment], fmt: str, ready_seconds: float) -> str:
    from supernode.api.pools import pool_views
    from supernode.operator.preview import preview_dict, preview_text

    deployments = [v.md for md in deployments for v in pool_views(md)]  # each pool rolls on its own
    if fmt == "table":
        return "\n\n".join(preview_text(md, ready_seconds) for md in deployments)
    data = {"rollouts": [preview_dict(md, ready_seconds) for md in deployments]}
    if fmt == "json":
        return json.dumps(data, indent=2)
    import yaml

    return yaml.safe_dump(data, sort_keys=False, width=120).rstrip()


def run(args: argparse.Namespace) -> int:
    if getattr(args, "rollout", False):
        try:
            deployments = load_deployments(args.file)
        except PlanInputError as exc:
            print("\n".join(exc.lines), file=sys.stderr)
            return 2
        print(render_rollouts(deployments, args.output, args.ready_seconds))
        return 0
    try:
        deployments = load_deployments(args.file)
        inventory = load_inventory(args.inventory, deployments)
    except PlanInputError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    print(render(plan_all(deployments, inventory, args.supernode_label), args.output))
    return 0
