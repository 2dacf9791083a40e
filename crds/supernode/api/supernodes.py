"""Which node label names a node's supernode: one rule for the planner and the manifests it renders.

The planner groups nodes by this label and the builders render the same key into each group's node
affinity; a second copy of the rule once made an operator-wide `--supernode-label` place groups on
one label and pin their pods to another (they never scheduled).
"""

from __future__ import annotations

from supernode.api import constants as C
from supernode.api.models import ModelDeploymentSpec


def supernode_label_key(spec: ModelDeploymentSpec, operator_default: str | None = None) -> str | None:
    """The node label holding the supernode id for this spec, or None when it has no supernodes (cpu).

    Order: the spec's `placement.supernodeLabel`; for Ascend, the operator-wide label
    (`--supernode-label`) else `huawei.com/superpod-id`; for NVIDIA, `nvidia.com/gpu.clique`.
    """
    vendor = spec.accelerator.type.vendor
    if vendor == "cpu":
        return None
    if spec.placement.supernode_label:
        return spec.placement.supernode_label
    if vendor == "ascend":
        return operator_default or C.NODE_LABEL_ASCEND_SUPERPOD
    return C.NODE_LABEL_NVIDIA_CLIQUE
