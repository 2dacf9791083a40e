"""Pure informer state: one resource's objects keyed by (namespace, name) plus the resourceVersion to
resume a watch from. A LIST replaces it; watch events (ADDED / MODIFIED / DELETED / BOOKMARK / ERROR)
are applied one at a time. No I/O here: the informer owns the network side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ObjectKey = tuple[str, str]  # (namespace, name)


class Expired(Exception):
    """The API no longer holds our resourceVersion (410 Gone / Expired): relist."""


class WatchError(Exception):
    """The watch stream carried an error (other than 410) or an event we cannot use: relist."""


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise WatchError(f"object without metadata.name: {str(obj)[:200]}")
    return (meta.get("namespace") or "", name)


def _rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclass
class ResourceCache:
    objects: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    resource_version: str = ""  # where the next watch resumes ("" before the first LIST)
    synced: bool = False  # True once a LIST has been applied

    def replace(self, items: Sequence[dict[str, Any]], resource_version: str) -> bool:
        """A full LIST: the new snapshot; True when it differs from what was cached."""
        fresh = {object_key(o): o for o in items}
        changed = not self.synced or fresh != self.objects
        self.objects, self.resource_version, self.synced = fresh, resource_version, True
        return changed

    def apply(self, event: Mapping[str, Any]) -> bool:
        """One watch event; True when the cached objects changed. Raises Expired / WatchError."""
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code, reason = obj.get("code"), obj.get("reason")
            message = obj.get("message") or str(obj)[:200]
            if code == 410 or reason in ("Expired", "Gone"):
                raise Expired(message)
            raise WatchError(f"watch error {code} {reason}: {message}")
        if kind == "BOOKMARK":
            self.resource_version = _rv(obj) or self.resource_version
            return False
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise WatchError(f"unknown watch event type {kind!r}")
        key = object_key(obj)
        self.resource_version = _rv(obj) or self.resource_version
        if kind == "DELETED":
            return self.objects.pop(key, None) is not None
        changed = self.objects.get(key) != obj
        self.objects[key] = dict(obj)
        return changed

    def items(self) -> list[dict[str, Any]]:
        return [self.objects[k] for k in sorted(self.objects)]
