"""Which ModelDeployment watch events need a reconcile pass (pure; no I/O).

Most events about a ModelDeployment are echoes of the operator's own writes (its status patches); a
pass over them would find nothing to do. A pass reads from the object only what `pass_inputs` returns:
the spec (and its generation), labels, annotations, and the status keys other writers own (the
autoscaler's `autoscaling` block and conditions). An event whose inputs equal those of the last pass
that completed is skipped. Everything else a pass depends on (children, pods, nodes, time) does not
arrive through these events: the resync loop reconciles every deployment for it regardless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supernode.api import constants as C

Inputs = tuple[Any, ...]


def _foreign_annotation(key: str) -> bool:
    """Annotations kopf keeps on the object (handler progress, last-handled state): not inputs."""
    return key.startswith("kopf.zalando.org/") or (key.startswith(f"{C.GROUP}/") and "last-handled" in key)


def pass_inputs(body: Mapping[str, Any]) -> Inputs:
    """What a reconcile pass reads from the ModelDeployment itself (compared by value)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if not _foreign_annotation(k)}
    others = [c for c in status.get("conditions") or [] if c.get("type") not in C.CONDITION_TYPES]
    return (meta.get("generation"), body.get("spec"), meta.get("labels") or {}, notes,
            meta.get("deletionTimestamp"), status.get("autoscaling"), others)


class PassFilter:
    """The inputs of each deployment's last completed pass, by uid."""

    def __init__(self) -> None:
        self._done: dict[str, Inputs] = {}

    def needed(self, uid: str, inputs: Inputs) -> bool:
        """Whether an event with these inputs needs a pass (False: an echo of what was reconciled)."""
        return self._done.get(uid) != inputs

    def completed(self, uid: str, inputs: Inputs) -> None:
        self._done[uid] = inputs

    def forget(self, uid: str) -> None:
        self._done.pop(uid, None)
