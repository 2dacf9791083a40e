"""The ModelDeployment API's shared base model (camelCase aliases, unknown fields refused) and its enums
(modes, engine and accelerator types, supernode policy); re-exported by supernode.api.models.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from supernode.api import constants as C


class _Model(BaseModel):
    """Base: camelCase aliases, unknown fields refused (a typo is an error, not a silent no-op)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


class Mode(StrEnum):
    NON_THINK = C.MODE_NON_THINK
    THINK_HIGH = C.MODE_THINK_HIGH
    THINK_MAX = C.MODE_THINK_MAX


# Effort values clients send (OpenAI `reasoning_effort`, Anthropic `output_config.effort`, lower-cased) and
# the mode each means: `none` turns thinking off; low/medium map to high, xhigh/ultra to max (FACTS.md).
# One table for the router and the engine.
EFFORT_MODES: dict[str, Mode] = {
    "none": Mode.NON_THINK,
    "minimal": Mode.THINK_HIGH,
    "low": Mode.THINK_HIGH,
    "medium": Mode.THINK_HIGH,
    "high": Mode.THINK_HIGH,
    "xhigh": Mode.THINK_MAX,
    "max": Mode.THINK_MAX,
    "ultra": Mode.THINK_MAX,
}


class EngineType(StrEnum):
    BUILTIN = "builtin"
    VLLM = "vllm"
    SGLANG = "sglang"
    MINDIE = "mindie"


class AcceleratorType(StrEnum):
    ASCEND_910B = "ascend-910b"
    ASCEND_910C = "ascend-910c"
    ASCEND_950 = "ascend-950"
    NVIDIA_H100 = "nvidia-h100"
    NVIDIA_H200 = "nvidia-h200"
    NVIDIA_B200 = "nvidia-b200"
    CPU = "cpu"

    @property
    def vendor(self) -> Literal["ascend", "nvidia", "cpu"]:
        if self.value.startswith("ascend"):
            return "ascend"
        if self.value.startswith("nvidia"):
            return "nvidia"
        return "cpu"

    @property
    def device(self) -> Literal["npu", "cuda", "cpu"]:
        """The torch device kind engines run on (`SUPERNODE_DEVICE`, the engine's `--device`)."""
        return DEVICE_KINDS[self.vendor]


# Torch device kind per accelerator vendor, and the env var that limits a process to its devices.
DEVICE_KINDS: dict[str, Literal["npu", "cuda", "cpu"]] = {"ascend": "npu", "nvidia": "cuda", "cpu": "cpu"}
VISIBLE_DEVICES_ENV: dict[str, str] = {"npu": C.ENV_ASCEND_VISIBLE_DEVICES, "cuda": C.ENV_CUDA_VISIBLE_DEVICES}


class SupernodePolicy(StrEnum):
    REQUIRED = "Required"  # every pod of a group inside one supernode
    PREFERRED = "Preferred"  # one supernode when possible, else span
    NONE = "None"  # ignore supernodes
