"""Names, labels and the template revision of the objects the operator renders (pure)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.api.pools import pool_name

POD_INDEX_LABEL = C.POD_INDEX_LABEL  # set by the StatefulSet controller (k8s >= 1.28)
LWS_WORKER_INDEX_LABEL = C.LWS_WORKER_INDEX_LABEL  # set by the LWS controller
LWS_GROUP = "leaderworkerset.x-k8s.io"
LWS_VERSION = "v1"
LWS_PLURAL = "leaderworkersets"
LWS_CRD_NAME = f"{LWS_PLURAL}.{LWS_GROUP}"


def label_value(value: str) -> str:
    """A string made safe for a label value (63 chars, alnum ends, [-_.] inside)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")
    return cleaned or "x"


def revision(md: ModelDeployment) -> str:
    """Hash of everything that changes what a group runs; replicas, rollout and recovery do not."""
    spec = md.spec
    relevant: dict[str, Any] = {
        "model": spec.model.model_dump(mode="json"),
        # An unset optional field added later leaves the hash as it was (no rollout on operator upgrade).
        "engine": spec.engine.model_dump(mode="json", exclude={"kv_events"} if spec.engine.kv_events is None else None),
        "accelerator": spec.accelerator.model_dump(mode="json"),
        "parallelism": spec.parallelism.model_dump(mode="json"),
        "resources": spec.resources.model_dump(mode="json"),
        "modes": [str(m) for m in spec.modes],
        "placement": spec.placement.model_dump(
            mode="json", include={"node_selector", "tolerations", "scheduler_name", "priority_class_name"}),
    }
    blob = json.dumps(relevant, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def group_name(md_name: str, index: int, rev: str, pool: str = "") -> str:
    """`<md>-g<index>-<rev>` (`<md>-<pool>-g<index>-<rev>` in a named pool): a replaced group never reuses
    its predecessor's name (surge at the same slot)."""
    if pool:
        return f"{md_name[:24]}-{pool}-g{index}-{rev[:6]}"
    return f"{md_name[:36]}-g{index}-{rev[:6]}"


def pool_labels(md: ModelDeployment) -> dict[str, str]:
    """The pool label of a view's objects (none without spec.pools, so older objects keep their selectors)."""
    pool = pool_name(md)
    return {C.LABEL_POOL: pool} if pool else {}


def pool_of(obj: Any) -> str:
    """The pool an object (workload, pod) belongs to, by its label ("" without one)."""
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(C.LABEL_POOL, ""))


def leader_service_name(md_name: str) -> str:
    return md_name[:63]


def deployment_labels(md_name: str) -> dict[str, str]:
    return {C.LABEL_DEPLOYMENT: label_value(md_name), C.LABEL_MANAGED_BY: C.MANAGED_BY_VALUE}


def group_labels(md: ModelDeployment, index: int, rev: str) -> dict[str, str]:
    return {
        **deployment_labels(md.metadata.name),
        C.LABEL_GROUP: str(index),
        **pool_labels(md),
        C.LABEL_REVISION: rev,
        C.LABEL_MODEL: label_value(md.spec.model.name),
        C.LABEL_NAME: "supernode-engine",
        C.LABEL_COMPONENT: "engine",
    }


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def status_selector(md_name: str) -> str:
    """`status.selector` for /scale (HPA): the leader pods of every group."""
    return selector_string({C.LABEL_DEPLOYMENT: label_value(md_name), C.LABEL_ROLE: C.ROLE_LEADER})

# Operator-internal (only the operator reads it): hash of the manifest last applied to an object, so a
# resync compares hashes instead of diffing server-defaulted fields and writes nothing when equal.
ANNOTATION_APPLIED_HASH = "supernode.io/applied-hash"


def manifest_hash(obj: dict[str, Any]) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with ANNOTATION_APPLIED_HASH set to the hash of everything else in it."""
    meta = obj["metadata"]
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k != ANNOTATION_APPLIED_HASH}
    digest = manifest_hash({**obj, "metadata": {**meta, "annotations": notes}})
    return {**obj, "metadata": {**meta, "annotations": {**notes, ANNOTATION_APPLIED_HASH: digest}}}
