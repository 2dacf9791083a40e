"""How a group's rank table reaches its pods (pure): the ConfigMap and the pod-template parts.

The table names device IPs the device plugin assigns only once the pods are admitted on their nodes,
so it cannot be in the pod template, nor in a ConfigMap whose name hashes its content. Instead each
group has one ConfigMap, `<group>-ranktable`, holding `hccl.json` and the UIDs of the pods it was
built from. A pod never reads it live: its init container waits until its own UID is listed (the
kubelet refreshes ConfigMap volumes) and copies `hccl.json` into an emptyDir the engine mounts
read-only, so a running job's table never changes under it. A gang restart brings new pods (new
UIDs, maybe new devices); the operator re-renders the ConfigMap and their init containers take the
new table. The ConfigMap is owned by the group's workload, so it goes when the group goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from supernode.api import constants as C
from supernode.api.models import EngineType, ModelDeployment
from supernode.operator.observe import GroupState, pod_rank
from supernode.operator.ranktable import (
    RANK_TABLE_DIR,
    RANK_TABLE_PATH,
    RankTableError,
    pod_devices,
    rank_table,
    render,
)

SOURCE_DIR = "/etc/supernode/ranktable-src"  # the ConfigMap, read by the init container only
KEY_TABLE = "hccl.json"
KEY_PODS = "pods"  # one pod UID per line: the pods this table was built from
ENV_RANK_TABLE_FILE = "RANK_TABLE_FILE"  # the variable MindIE and HCCL launchers read the table path from
_WAIT = (f'until grep -qx "$POD_UID" {SOURCE_DIR}/{KEY_PODS} 2>/dev/null; do sleep 2; done; '
         f"cp {SOURCE_DIR}/{KEY_TABLE} {RANK_TABLE_DIR}/{KEY_TABLE}")


def needs_rank_table(md: ModelDeployment) -> bool:
    """Engines that read an HCCL rank table: MindIE, and the builtin engine on Ascend NPUs."""
    spec = md.spec
    return spec.accelerator.type.vendor == "ascend" and spec.engine.type in (EngineType.MINDIE, EngineType.BUILTIN)


def configmap_name(group_name: str) -> str:
    return f"{group_name}-ranktable"


def template_parts(group_name: str, image: str) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any],
                                                          dict[str, Any]]:
    """(volumes, init container, engine volumeMount, engine env entry) for a group's pod template."""
    volumes = [{"name": "ranktable-src", "configMap": {"name": configmap_name(group_name), "optional": True}},
               {"name": "ranktable", "emptyDir": {"sizeLimit": "16Mi"}}]
    init = {"name": "wait-ranktable", "image": image, "command": ["sh", "-c", _WAIT],
            "env": [{"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}],
            "volumeMounts": [{"name": "ranktable-src", "mountPath": SOURCE_DIR, "readOnly": True},
                             {"name": "ranktable", "mountPath": RANK_TABLE_DIR}]}
    mount = {"name": "ranktable", "mountPath": RANK_TABLE_DIR, "readOnly": True}
    return volumes, init, mount, {"name": ENV_RANK_TABLE_FILE, "value": RANK_TABLE_PATH}


def group_configmap(group: GroupState, pods: Sequence[Mapping[str, Any]],
                    workload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The group's rank-table ConfigMap once every rank's pod carries its devices, else None.

    `pods`: the deployment's pods (this group's are picked by group, pool and revision labels).
    Raises RankTableError when an annotation is malformed."""
    mine = [p for p in pods if _labels(p).get(C.LABEL_GROUP) == str(group.index)
            and _labels(p).get(C.LABEL_REVISION) == group.revision
            and _labels(p).get(C.LABEL_POOL, "") == group.pool
            and not (p.get("metadata") or {}).get("deletionTimestamp")]
    if len(mine) < group.expected_pods:
        return None
    devices = [pod_devices(p, pod_rank(p)) for p in mine]
    if any(d is None for d in devices):
        return None
    table = rank_table([d for d in devices if d is not None])
    meta = workload["metadata"]
    uids = sorted(str(p["metadata"].get("uid", "")) for p in mine)
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": configmap_name(group.name), "namespace": meta.get("namespace") or "default",
                     "labels": {k: v for k, v in (meta.get("labels") or {}).items()},
                     "ownerReferences": [{"apiVersion": workload.get("apiVersion", ""), "kind": workload["kind"],
                                          "name": meta["name"], "uid": meta.get("uid", "")}]},
        "data": {KEY_TABLE: render(table), KEY_PODS: "\n".join(uids) + "\n"},
    }


def _labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


__all__ = ["RankTableError", "configmap_name", "group_configmap", "needs_rank_table", "template_parts"]
