"""The HCCL rank table of one replica group, from what the Ascend device plugin publishes (pure).

Output format: the CANN HCCL user guide, "Rank Table Configuration (Atlas A3 training / inference
products)" (hiascend.com, CANN commlib hcclug_000066), SuperPoD networking: `status: "completed"`,
`version: "1.2"`, `server_count`, `server_list[{server_id, host_ip?, device[{device_id,
super_device_id, device_ip, rank_id}]}]` and `super_pod_list[{super_pod_id, server_list[{server_id}]}]`,
every value a string, rank ids from 0 in device order. Without SuperPoD data (A2 servers) the same
guide's version "1.0" table is written: no `super_device_id`, no `super_pod_list`.

Input: the annotation the device plugin writes on every pod it gave NPUs to (MindCluster docs, "Pod
annotations": the data source Ascend Operator builds hccl.json from) — JSON `{pod_name, server_id,
host_ip?, super_pod_id?, devices: [{device_id, device_ip, super_device_id?}]}`. Nothing here reads the
device-info ConfigMaps: every field the table needs is on the pods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEVICE_ANNOTATION = "ascend.kubectl.kubernetes.io/ascend-910-configuration"
RANK_TABLE_DIR = "/etc/supernode/ranktable"  # where the engine reads its copy (ranktable_objects.py)
RANK_TABLE_PATH = f"{RANK_TABLE_DIR}/hccl.json"
RANK_TABLE_VERSION_SUPERPOD = "1.2"
RANK_TABLE_VERSION_PLAIN = "1.0"


class RankTableError(ValueError):
    """A device annotation the table cannot be built from (names the pod and the field)."""


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    device_ip: str
    super_device_id: str | None = None


@dataclass(frozen=True, slots=True)
class PodDevices:
    """One pod's NPUs as the device plugin announced them; `rank` is the pod's rank in its group."""

    rank: int
    pod: str
    server_id: str
    devices: tuple[Device, ...]
    host_ip: str | None = None
    super_pod_id: str | None = None


def _text(value: Any, pod: str, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise RankTableError(f"pod {pod}: {DEVICE_ANNOTATION}: {field} must be a non-empty string or integer")
    return str(value)


def pod_devices(pod: Mapping[str, Any], rank: int) -> PodDevices | None:
    """The devices of one pod (None while the plugin has not annotated it yet)."""
    meta = pod.get("metadata") or {}
    name = str(meta.get("name", ""))
    raw = (meta.get("annotations") or {}).get(DEVICE_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RankTableError(f"pod {name}: {DEVICE_ANNOTATION} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("devices"), list) or not data["devices"]:
        raise RankTableError(f"pod {name}: {DEVICE_ANNOTATION}: devices must be a non-empty list")
    devices = []
    for i, d in enumerate(data["devices"]):
        if not isinstance(d, dict):
            raise RankTableError(f"pod {name}: {DEVICE_ANNOTATION}: devices[{i}] must be an object")
        sdid = d.get("super_device_id")
        devices.append(Device(_text(d.get("device_id"), name, f"devices[{i}].device_id"),
                              _text(d.get("device_ip"), name, f"devices[{i}].device_ip"),
                              None if sdid in (None, "") else _text(sdid, name, f"devices[{i}].super_device_id")))
    spid = data.get("super_pod_id")
    return PodDevices(rank=rank, pod=name, server_id=_text(data.get("server_id"), name, "server_id"),
                      devices=tuple(sorted(devices, key=lambda d: (len(d.device_id), d.device_id))),
                      host_ip=str(data["host_ip"]) if data.get("host_ip") else None,
                      super_pod_id=None if spid in (None, "", -1) else _text(spid, name, "super_pod_id"))


def rank_table(pods: Sequence[PodDevices]) -> dict[str, Any]:
    """The group's rank table: servers in pod-rank order, rank ids counted over their devices."""
    if not pods:
        raise RankTableError("a rank table needs at least one pod")
    ordered = sorted(pods, key=lambda p: p.rank)
    superpod = all(p.super_pod_id is not None and all(d.super_device_id is not None for d in p.devices)
                   for p in ordered)
    servers: dict[str, dict[str, Any]] = {}  # two pods on one server share its entry (server_id is unique)
    pod_of_server: dict[str, str | None] = {}
    rank = 0
    for p in ordered:
        host = {"host_ip": p.host_ip} if p.host_ip else {}
        entry = servers.setdefault(p.server_id, {"server_id": p.server_id, **host, "device": []})
        if pod_of_server.setdefault(p.server_id, p.super_pod_id) != p.super_pod_id:
            raise RankTableError(f"pod {p.pod}: server {p.server_id} reported in two SuperPoDs")
        for d in p.devices:
            device = {"device_id": d.device_id, "device_ip": d.device_ip, "rank_id": str(rank)}
            if superpod:
                device = {"device_id": d.device_id, "super_device_id": str(d.super_device_id),
                          "device_ip": d.device_ip, "rank_id": str(rank)}
            entry["device"].append(device)
            rank += 1
    table: dict[str, Any] = {
        "status": "completed",
        "version": RANK_TABLE_VERSION_SUPERPOD if superpod else RANK_TABLE_VERSION_PLAIN,
        "server_count": str(len(servers)),
        "server_list": list(servers.values()),
    }
    if superpod:
        by_pod: dict[str, list[dict[str, str]]] = {}
        for server_id, spid in pod_of_server.items():
            by_pod.setdefault(str(spid), []).append({"server_id": server_id})
        table["super_pod_list"] = [{"super_pod_id": spid, "server_list": members} for spid, members in by_pod.items()]
    return table


def render(table: Mapping[str, Any]) -> str:
    """The file text (stable key order, so equal tables give equal bytes and equal hashes)."""
    return json.dumps(table, indent=2) + "\n"
