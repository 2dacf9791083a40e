"""Prometheus metrics of the operator, on a registry the operator owns (no global default registry)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from supernode.api import constants as C

PHASES = ("Pending", "Starting", "Ready", "Restarting", "Draining", "Failed")


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # What observe() last set per deployment (bounded: forget() drops a deleted one's entry).
        self._observed: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.reconciles = Counter("supernode_operator_reconciles_total", "Reconcile passes by result.",
                                  ["result"], registry=self.registry)
        self.skipped = Counter("supernode_operator_reconcile_skipped_total",
                               "ModelDeployment watch events that needed no pass: they only echoed the operator's "
                               "own writes (status patches, kopf's metadata).", registry=self.registry)
        self.duration = Histogram("supernode_operator_reconcile_duration_seconds", "Duration of one reconcile pass.",
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                  registry=self.registry)
        self.writes = Counter("supernode_operator_api_writes_total", "Writes to the Kubernetes API.",
                              registry=self.registry)
        self.groups = Gauge("supernode_operator_groups", "Replica groups by phase.",
                            ["namespace", "deployment", "phase"], registry=self.registry)
        self.desired = Gauge("supernode_operator_desired_groups", "spec.replicas.",
                             ["namespace", "deployment"], registry=self.registry)
        self.placeable = Gauge("supernode_operator_placeable_groups", "Groups the cluster can place.",
                               ["namespace", "deployment"], registry=self.registry)
        self.condition = Gauge("supernode_operator_condition", "1 when the condition is True.",
                               ["namespace", "deployment", "condition"], registry=self.registry)
        self.leader = Gauge("supernode_operator_leader",
                            "1 while this replica runs the operator (holds the Lease with --leader-elect).",
                            registry=self.registry)
        self.leader_transitions = Counter("supernode_operator_leader_transitions_total",
                                          "Changes of this replica's leadership (acquired or lost).",
                                          registry=self.registry)
        self.device_faults = Counter("supernode_operator_device_faults_total",
                                     "Device faults newly reported by the device plugins, by fault level.", ["level"],
                                     registry=self.registry)
        self.device_info_rejected = Counter("supernode_operator_device_info_rejected_total",
                                            "Device-info reports ignored (reason: checkcode | unparseable).",
                                            ["reason"], registry=self.registry)
        self.fault_repairs = Counter("supernode_operator_fault_repairs_total",
                                     "Replica groups repaired after a device fault, by action.", ["action"],
                                     registry=self.registry)
        self._is_leader = False
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    def set_leader(self, leader: bool) -> None:
        """Record this replica's role; a change counts as one transition."""
        if leader != self._is_leader:
            self.leader_transitions.inc()
        self._is_leader = leader
        self.leader.set(1 if leader else 0)

    def observe(self, namespace: str, name: str, status: Mapping[str, Any] | None, desired: int) -> None:
        if status is None:
            return
        phases = {p: 0 for p in PHASES}
        for g in status.get("groups") or []:
            phases[g.get("phase", "Pending")] = phases.get(g.get("phase", "Pending"), 0) + 1
        conditions = tuple((c["type"], 1 if c["status"] == "True" else 0) for c in status.get("conditions") or []
                           if c["type"] in C.CONDITION_TYPES)
        values = (tuple(phases.items()), desired, status.get("placeableReplicas", 0), conditions)
        if self._observed.get((namespace, name)) == values:
            return  # most passes change nothing: setting a dozen labelled gauges again is not free
        self._observed[(namespace, name)] = values
        for phase, count in phases.items():
            self.groups.labels(namespace, name, phase).set(count)
        self.desired.labels(namespace, name).set(desired)
        self.placeable.labels(namespace, name).set(values[2])
        for kind, value in conditions:
            self.condition.labels(namespace, name, kind).set(value)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted deployment's series."""
        self._observed.pop((namespace, name), None)
        series: list[tuple[Gauge, tuple[str, ...]]] = [(self.groups, (namespace, name, p)) for p in PHASES]
        series += [(self.desired, (namespace, name)), (self.placeable, (namespace, name))]
        series += [(self.condition, (namespace, name, c)) for c in C.CONDITION_TYPES]
        for gauge, labels in series:
            with contextlib.suppress(KeyError):  # never exported
                gauge.remove(*labels)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        self._server = start_http_server(port, addr, registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None
