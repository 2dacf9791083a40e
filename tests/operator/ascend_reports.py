"""Fluent builder for the Ascend device plugin's per-node ConfigMap (shape: operator/device_info.py).

    ascend_report("sp0-n0").chips(16).fault("Ascend910-3", "SeparateNPU", "8C1F8608").configmap()
"""

from __future__ import annotations

import json
from typing import Any

from supernode.api import constants as C
from supernode.operator.device_info import check_code

RES = C.RESOURCE_ASCEND


class AscendReport:
    def __init__(self, node: str, update_time: int = 1718702470, prefix: str = RES, chip: str = "Ascend910"):
        self.node, self.update_time, self.prefix, self.chip_name = node, update_time, prefix, chip
        self.healthy: list[str] = []
        self.faults: list[dict[str, Any]] = []
        self.lists: dict[str, list[str]] = {"-Unhealthy": [], "-NetworkUnhealthy": []}
        self.manual: str | None = None
        self.bad_code = False

    def chips(self, n: int) -> AscendReport:
        self.healthy = [f"{self.chip_name}-{i}" for i in range(n)]
        return self

    def fault(self, chip: str, level: str, codes: str = "80E01801", *, field: str = "fault_handling",
              kind: str = "CardUnhealthy", since: int = 1718702400) -> AscendReport:
        entry: dict[str, Any] = {"fault_type": kind, "npu_name": chip, "large_model_fault_level": "",
                                 "fault_level": "", "fault_handling": "", "fault_code": codes,
                                 "fault_time_and_level_map": {codes.split(",")[0]: {
                                     "fault_time": since, "fault_level": level}}}
        entry[field] = level
        self.faults.append(entry)
        return self

    def node_fault(self) -> AscendReport:
        self.faults.append({"fault_type": "NodeUnhealthy", "npu_name": "", "fault_handling": "", "fault_code": ""})
        return self

    def unhealthy(self, *chips: str, network: bool = False) -> AscendReport:
        self.lists["-NetworkUnhealthy" if network else "-Unhealthy"] += chips
        return self

    def manually_separated(self, chips: str) -> AscendReport:
        self.manual = chips
        return self

    def tampered(self) -> AscendReport:
        """A CheckCode that does not match (a hand edit of the ConfigMap)."""
        self.bad_code = True
        return self

    def device_list(self) -> dict[str, str]:
        out = {self.prefix: ",".join(self.healthy), f"{self.prefix}-Fault": json.dumps(self.faults)}
        out.update({self.prefix + suffix: ",".join(chips) for suffix, chips in self.lists.items()})
        return out

    def cfg(self) -> str:
        devices = self.device_list()
        code = check_code(devices, self.update_time)
        if self.bad_code:
            code = code[::-1]
        return json.dumps({"DeviceInfo": {"DeviceList": devices, "UpdateTime": self.update_time},
                           "SuperPodID": 0, "ServerIndex": 0, "CheckCode": code})

    def configmap(self, raw: str | None = None) -> dict[str, Any]:
        data = {C.ASCEND_DEVICE_INFO_KEY: self.cfg() if raw is None else raw}
        if self.manual is not None:
            data[C.ASCEND_MANUAL_SEPARATE_KEY] = self.manual
        return {"apiVersion": "v1", "kind": "ConfigMap", "data": data, "metadata": {
            "name": C.ASCEND_DEVICE_INFO_PREFIX + self.node, "namespace": C.ASCEND_DEVICE_INFO_NAMESPACE}}


def ascend_report(node: str, **kwargs: Any) -> AscendReport:
    return AscendReport(node, **kwargs)
