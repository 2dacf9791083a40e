"""`kopf run -m supernode.operator.kopf_main [-A | -n NS]`: the operator on kopf's default registry.

Configuration from env: SUPERNODE_OPERATOR_RESYNC (seconds), SUPERNODE_SUPERNODE_LABEL, SUPERNODE_API_SERVER.
(`supernode operator` is the preferred entry point; this module exists for `kopf run` users.)
"""

from __future__ import annotations

import os

import kopf

from supernode.operator.handlers import OperatorConfig, build_registry

kopf.set_default_registry(build_registry(OperatorConfig(
    server=os.environ.get("SUPERNODE_API_SERVER") or None,
    resync_seconds=float(os.environ.get("SUPERNODE_OPERATOR_RESYNC", "10")),
    supernode_label=os.environ.get("SUPERNODE_SUPERNODE_LABEL") or None,
)))
