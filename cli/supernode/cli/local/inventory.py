"""This machine as a one-node planner inventory: CPU always, CUDA / Ascend devices when present.

Probed without importing torch (`nvidia-smi -L`, `/dev/davinci*`) so `supernode up` stays quick.
The machine is its own supernode: a group can never span machines locally.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass

from supernode.api import constants as C
from supernode.operator.types import Inventory, NodeInfo

LOCAL_SUPERNODE = "local"


@dataclass(frozen=True, slots=True)
class Devices:
    cuda: int = 0
    cuda_product: str = ""
    npu: int = 0


def probe_devices() -> Devices:
    cuda, product = 0, ""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
        cuda = len(gpus)
        if gpus:
            m = re.match(r"GPU \d+: (.*?) \(", gpus[0])
            product = (m.group(1) if m else "").replace(" ", "-")
    npu = len([p for p in glob.glob("/dev/davinci*") if re.fullmatch(r"/dev/davinci\d+", p)])
    return Devices(cuda=cuda, cuda_product=product, npu=npu)


def local_inventory(devices: Devices | None = None, hostname: str | None = None) -> Inventory:
    """One node: this machine, with its accelerators as extended resources."""
    devices = devices if devices is not None else probe_devices()
    name = (hostname or socket.gethostname() or "localhost").lower()
    labels = {
        C.NODE_LABEL_HOSTNAME: name,
        C.NODE_LABEL_NVIDIA_CLIQUE: LOCAL_SUPERNODE,
        C.NODE_LABEL_ASCEND_SUPERPOD: LOCAL_SUPERNODE,
    }
    allocatable: dict[str, int] = {"cpu": os.cpu_count() or 1}
    if devices.cuda:
        allocatable[C.RESOURCE_NVIDIA] = devices.cuda
        if devices.cuda_product:
            labels[C.NODE_LABEL_NVIDIA_PRODUCT] = devices.cuda_product
    if devices.npu:
        allocatable[C.RESOURCE_ASCEND] = devices.npu
        labels[C.NODE_LABEL_ACCELERATOR] = "huawei-Ascend910"
    return Inventory(nodes=(NodeInfo(name=name, labels=labels, allocatable=allocatable),))

