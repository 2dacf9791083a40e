"""The Ascend device plugin's per-node ConfigMap → the node's device faults (pure).

The shape mirrors Ascend/mind-cluster `component/ascend-device-plugin/pkg/common/proto.go`
(`NodeDeviceInfoCache{DeviceInfo NodeDeviceInfo{DeviceList map[string]string; UpdateTime int64}; SuperPodID;
ServerIndex; CheckCode; RackID}` and `DeviceFault` with `fault_type`, `npu_name`, `large_model_fault_level`,
`fault_level`, `fault_handling`, `fault_code`, `fault_time_and_level_map`), written by
`pkg/kubeclient/kubeclient.go` `WriteDeviceInfoDataIntoCM` into `kube-system/mindx-dl-deviceinfo-<node>`:

    data:
      DeviceInfoCfg: '{"DeviceInfo":{"DeviceList":{"huawei.com/Ascend910":"Ascend910-0,...",
                       "huawei.com/Ascend910-Fault":"[{\"npu_name\":\"Ascend910-3\",\"fault_handling\":...}]",
                       "huawei.com/Ascend910-NetworkUnhealthy":"","huawei.com/Ascend910-Unhealthy":""},
                       "UpdateTime":1718702470},"CheckCode":"<sha256>", ...}'
      ManuallySeparateNPU: "Ascend910-0"

`CheckCode` is `common.MakeDataHash(DeviceInfo)`: the hex SHA-256 of Go's `json.Marshal` of `DeviceInfo`
(fields in declaration order, map keys sorted, no spaces, `<`, `>`, `&` escaped). Atlas 950-class nodes
name the keys `huawei.com/npu-*` and the chips `npu-N`; both are read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supernode.api import constants as C
from supernode.api.strictjson import loads_strict
from supernode.operator.faults import LEVEL_ACTIONS, SEVERITY, Action, DeviceFault

_PREFIX = "huawei.com/"
_LIST_SUFFIXES = {"-Unhealthy": "Unhealthy list", "-NetworkUnhealthy": "NetworkUnhealthy list"}
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class DeviceInfoError(ValueError):
    """The ConfigMap is not a device-info report we can use; the message names the field."""


class CheckCodeMismatch(DeviceInfoError):
    """The report parses but its CheckCode is not the digest of its DeviceInfo."""


@dataclass(frozen=True, slots=True)
class NodeDeviceReport:
    node: str
    faults: tuple[DeviceFault, ...]
    update_time: int


def go_json(value: Any) -> str:
    """`json.Marshal` of Go for the values a DeviceInfo holds (strings, integers, string maps)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    for raw, escaped in _GO_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def check_code(device_list: Mapping[str, str], update_time: int) -> str:
    body = '{"DeviceList":' + go_json(dict(device_list)) + ',"UpdateTime":' + str(int(update_time)) + "}"
    return hashlib.sha256(body.encode()).hexdigest()


def _device_info(cfg: Any) -> tuple[dict[str, str], int, str]:
    if not isinstance(cfg, Mapping):
        raise DeviceInfoError(f"{C.ASCEND_DEVICE_INFO_KEY}: not a JSON object")
    info, code = cfg.get("DeviceInfo"), cfg.get("CheckCode")
    if not isinstance(info, Mapping):
        raise DeviceInfoError(f"{C.ASCEND_DEVICE_INFO_KEY}.DeviceInfo: missing or not an object")
    if not isinstance(code, str) or not code:
        raise DeviceInfoError(f"{C.ASCEND_DEVICE_INFO_KEY}.CheckCode: missing or not a string")
    devices, when = info.get("DeviceList"), info.get("UpdateTime")
    if not isinstance(devices, Mapping) or not all(isinstance(v, str) for v in devices.values()):
        raise DeviceInfoError(f"{C.ASCEND_DEVICE_INFO_KEY}.DeviceInfo.DeviceList: not a map of strings")
    if not isinstance(when, int) or isinstance(when, bool):
        raise DeviceInfoError(f"{C.ASCEND_DEVICE_INFO_KEY}.DeviceInfo.UpdateTime: not an integer")
    return dict(devices), when, code


def _chips(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def _fault_entries(node: str, key: str, value: str) -> list[DeviceFault]:
    where = f"{C.ASCEND_DEVICE_INFO_KEY}.DeviceInfo.DeviceList[{key}]"
    if not value.strip():
        return []
    try:
        entries = loads_strict(value)
    except ValueError as e:
        raise DeviceInfoError(f"{where}: not a JSON list ({e})") from None
    if not isinstance(entries, list):
        raise DeviceInfoError(f"{where}: not a JSON list")
    out: list[DeviceFault] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise DeviceInfoError(f"{where}[{i}]: not an object")
        fields = {k: entry.get(k) for k in ("fault_type", "npu_name", "fault_handling", "fault_level",
                                            "large_model_fault_level", "fault_code")}
        bad = next((k for k, v in fields.items() if v is not None and not isinstance(v, str)), None)
        if bad:
            raise DeviceInfoError(f"{where}[{i}].{bad}: not a string")
        # The three level fields mean the same; the plugin's docs recommend fault_handling.
        level = fields["fault_handling"] or fields["fault_level"] or fields["large_model_fault_level"] or ""
        chip, kind = fields["npu_name"] or "", fields["fault_type"] or ""
        if not chip and kind == "NodeUnhealthy":
            action: Action = "rebuild"  # a node fault carries no level
            level = level or kind
        elif level in LEVEL_ACTIONS:
            action = LEVEL_ACTIONS[level]
        else:
            raise DeviceInfoError(f"{where}[{i}].fault_handling: unknown level {level!r}")
        times = entry.get("fault_time_and_level_map") or {}
        since = [t.get("fault_time") for t in times.values() if isinstance(t, Mapping)] if isinstance(
            times, Mapping) else []
        started = min((t for t in since if isinstance(t, int) and not isinstance(t, bool)), default=None)
        out.append(DeviceFault(node, chip, level, action, tuple(_chips(fields["fault_code"] or "")),
                               source=kind or "fault", since=started))
    return out


def parse_device_info(cm: Mapping[str, Any]) -> NodeDeviceReport:
    """One `mindx-dl-deviceinfo-<node>` ConfigMap → its node's faults. Raises DeviceInfoError (naming the field)
    when it does not parse, CheckCodeMismatch when the digest is wrong."""
    meta = cm.get("metadata") or {}
    name = str(meta.get("name") or "")
    node = name.removeprefix(C.ASCEND_DEVICE_INFO_PREFIX)
    data = cm.get("data") or {}
    raw = data.get(C.ASCEND_DEVICE_INFO_KEY) if isinstance(data, Mapping) else None
    if not isinstance(raw, str):
        raise DeviceInfoError(f"data.{C.ASCEND_DEVICE_INFO_KEY}: missing")
    try:
        cfg = loads_strict(raw)
    except ValueError as e:
        raise DeviceInfoError(f"data.{C.ASCEND_DEVICE_INFO_KEY}: not JSON ({e})") from None
    devices, when, code = _device_info(cfg)
    if check_code(devices, when) != code.lower():
        raise CheckCodeMismatch(f"{C.ASCEND_DEVICE_INFO_KEY}.CheckCode: {code[:16]}… is not the SHA-256 of "
                                "DeviceInfo (a partial write or an edit by hand); report ignored")
    per_chip: dict[str, list[DeviceFault]] = {}
    listed: list[DeviceFault] = []
    for key, value in sorted(devices.items()):
        if not key.startswith(_PREFIX):
            continue
        if key.endswith("-Fault"):
            for fault in _fault_entries(node, key, value):
                per_chip.setdefault(fault.device, []).append(fault)
            continue
        for suffix, source in _LIST_SUFFIXES.items():
            if key.endswith(suffix):
                listed += [DeviceFault(node, chip, "SeparateNPU", "rebuild", source=source) for chip in _chips(value)]
    # A chip the Fault list details is judged by its entries; the plain lists speak for the others.
    faults = [f for fs in per_chip.values() for f in fs] + [f for f in listed if f.device not in per_chip]
    manual = data.get(C.ASCEND_MANUAL_SEPARATE_KEY)
    if isinstance(manual, str):
        faults += [DeviceFault(node, chip, "ManuallySeparateNPU", "rebuild", source=C.ASCEND_MANUAL_SEPARATE_KEY)
                   for chip in _chips(manual)]
    unique = sorted(set(faults), key=lambda f: (f.device, -SEVERITY[f.action], f.level, f.codes))
    return NodeDeviceReport(node, tuple(unique), when)
