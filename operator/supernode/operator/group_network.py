"""Per-group NetworkPolicy (pure): a group's pods accept any port only from the pods of the same group.

NetworkPolicies add up: together with the chart's engine policy (the `http` port from the router
only), an engine pod is reachable by the router on its HTTP port and by its own group's ranks on every
port (rendezvous store, gloo/NCCL/HCCL peers), and by nothing else.
"""

from __future__ import annotations

from typing import Any


def network_policy(meta: dict[str, Any], group_selector: dict[str, str]) -> dict[str, Any]:
    """``meta``: the group's object metadata; ``group_selector``: labels exactly the group's pods carry."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
        "spec": {"podSelector": {"matchLabels": dict(group_selector)}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": dict(group_selector)}}]}]},
    }
