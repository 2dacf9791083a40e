"""Plan + ModelDeployment → Kubernetes manifests (pure; no client, no I/O).

Per replica group: a LeaderWorkerSet (when the LWS CRD is installed) or a StatefulSet plus a headless
Service (stable DNS for rank discovery), and a PodDisruptionBudget; optionally the group's Secret
(group_secrets.py) and NetworkPolicy (group_network.py). Per deployment: a Service that
selects the group leaders (what the router and users hit). Everything carries an ownerReference to
the ModelDeployment, so deleting it deletes them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, cast

from supernode.api import constants as C
from supernode.api.models import ModelDeployment
from supernode.api.pools import pool_name
from supernode.operator import naming as N
from supernode.operator.engines import (
    RENDEZVOUS_PORT,
    GroupContext,
    engine_container,
    image_for,
    kv_event_ranks,
    kv_events_ports,
)
from supernode.operator.group_network import network_policy
from supernode.operator.group_secrets import GroupKeys, secret_object
from supernode.operator.ranktable_objects import needs_rank_table, template_parts
from supernode.operator.sources import model_volume
from supernode.operator.types import GroupPlan, Plan


@dataclass(frozen=True, slots=True)
class Owner:
    api_version: str
    kind: str
    name: str
    uid: str

    def ref(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}


def owner_of(md: ModelDeployment) -> Owner:
    return Owner(C.API_VERSION, C.KIND, md.metadata.name, md.metadata.uid or "")


def _meta(name: str, namespace: str, labels: dict[str, str], owner: Owner,
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels),
                            "ownerReferences": [owner.ref()]}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def leader_annotations(md: ModelDeployment) -> dict[str, str]:
    out = {
        C.ANNOTATION_MODES: ",".join(str(m) for m in md.spec.modes),
        C.ANNOTATION_ALIASES: ",".join(md.spec.model.aliases),
        C.ANNOTATION_ENGINE_TYPE: md.spec.engine.type.value,
    }
    if md.spec.pools and len(md.spec.pools) == 1:  # a pool's own concurrency and weight reach the router
        out[C.ANNOTATION_MAX_CONCURRENCY] = str(md.spec.engine.max_concurrency)
        out[C.ANNOTATION_CAPACITY_WEIGHT] = f"{md.spec.pools[0].capacity_weight:g}"
    return out


def affinity(plan: Plan, group: GroupPlan) -> dict[str, Any] | None:
    """The planner's binding: the group's nodes if bound, and its supernode under the label key the planner
    placed by (`plan.supernode_label`, from `supernode.api.supernodes.supernode_label_key`)."""
    nodes = sorted({p.node for p in group.pods if p.node})
    terms: list[dict[str, Any]] = []
    if nodes:
        terms.append({"key": C.NODE_LABEL_HOSTNAME, "operator": "In", "values": nodes})
    label = plan.supernode_label
    if group.supernode and label:
        terms.append({"key": label, "operator": "In", "values": [group.supernode]})
    if not terms:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": terms}]}}}


def _resources(md: ModelDeployment, plan: Plan) -> dict[str, Any]:
    requests = dict(md.spec.resources.requests)
    limits = dict(md.spec.resources.limits)
    resource = md.spec.accelerator.resource_name or plan.resource_name
    if resource and md.spec.accelerator.devices_per_pod:
        requests[resource] = limits[resource] = str(md.spec.accelerator.devices_per_pod)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _probes(md: ModelDeployment, role: str | None, pods: int) -> dict[str, Any]:
    port = md.spec.engine.port
    if role == C.ROLE_WORKER:
        return {}
    if role is None and pods > 1:
        # One StatefulSet template for every rank: only rank 0 serves HTTP, so probe through env.
        check: dict[str, Any] = {"exec": {"command": ["python3", "-c", (
            "import os,sys,urllib.request\n"
            f"os.environ.get('{C.ENV_RANK}','0')!='0' and sys.exit(0)\n"
            f"urllib.request.urlopen('http://127.0.0.1:{port}/health',timeout=3)")]}}
    else:
        check = {"httpGet": {"path": "/health", "port": port}}
    def fresh() -> dict[str, Any]:  # each probe its own copy (JSON-shaped: a round trip is a deep copy)
        return cast(dict[str, Any], json.loads(blob))

    blob = json.dumps(check)
    return {
        "startupProbe": {**fresh(), "periodSeconds": 10, "failureThreshold": 360},  # load: up to 1 h
        "readinessProbe": {**fresh(), "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**fresh(), "periodSeconds": 15, "failureThreshold": 4, "timeoutSeconds": 5},
    }


def pod_template(md: ModelDeployment, plan: Plan, group: GroupPlan, ctx: GroupContext, rev: str,
                 role: str | None) -> dict[str, Any]:
    labels = N.group_labels(md, group.index, rev)
    if role:
        labels[C.LABEL_ROLE] = role
    container = engine_container(md, ctx)
    container["resources"] = _resources(md, plan)
    container.update(_probes(md, role, ctx.pods))
    volumes, mounts, init = model_volume(md, image_for(md))
    shm = "1Gi" if md.spec.accelerator.type.vendor == "cpu" else "64Gi"
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}}, *volumes]
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}, *mounts]
    if needs_rank_table(md):
        table_volumes, wait, mount, env = template_parts(
            N.group_name(md.metadata.name, group.index, rev, pool_name(md)), image_for(md))
        volumes, init = [*volumes, *table_volumes], [*init, wait]
        container["volumeMounts"].append(mount)
        if not any(e["name"] == env["name"] for e in container.get("env", [])):  # engine.env may set its own
            container["env"] = [*container.get("env", []), env]
    spec: dict[str, Any] = {"containers": [container], "volumes": volumes, "terminationGracePeriodSeconds": 60}
    if init:
        spec["initContainers"] = init
    aff = affinity(plan, group)
    if aff:
        spec["affinity"] = aff
    placement = md.spec.placement
    if placement.node_selector:
        spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True, mode="json")
                               for t in placement.tolerations]
    if placement.scheduler_name:
        spec["schedulerName"] = placement.scheduler_name
    if placement.priority_class_name:
        spec["priorityClassName"] = placement.priority_class_name
    return {"metadata": {"labels": labels, "annotations": {**leader_annotations(md), **dp_annotations(md, ctx)}},
            "spec": spec}


def dp_annotations(md: ModelDeployment, ctx: GroupContext) -> dict[str, str]:
    """Engines that publish KV events once per data-parallel rank, with the ranks spread over the group's
    pods: the ranks each pod runs (the pods share one template, so every pod names every rank's ports;
    discovery picks each pod's own by its index). None for a group in one pod: its template, and so its
    running pods, stay as they were before groups could spread."""
    ranks = kv_event_ranks(md)
    if md.spec.engine.kv_events is None or ranks == 1 or ctx.pods == 1:
        return {}
    return {C.ANNOTATION_DP_LOCAL: str(ranks // max(1, ctx.pods))}


def _selector(md: ModelDeployment, index: int, rev: str) -> dict[str, str]:
    return {C.LABEL_DEPLOYMENT: N.label_value(md.metadata.name), C.LABEL_GROUP: str(index),
            **N.pool_labels(md), C.LABEL_REVISION: rev}


def group_objects(md: ModelDeployment, plan: Plan, group: GroupPlan, rev: str, *, lws: bool,
                  keys: GroupKeys | None = None, policy: bool = False) -> list[dict[str, Any]]:
    """Every object of one replica group (with `keys` the group Secret first, then the workload; with
    `policy` a NetworkPolicy letting only the group's own pods in, group_network.py)."""
    ns = md.metadata.namespace or "default"
    owner = owner_of(md)
    name = N.group_name(md.metadata.name, group.index, rev, pool_name(md))
    labels = N.group_labels(md, group.index, rev)
    pods = plan.pods_per_group
    notes = {C.LABEL_SUPERNODE: group.supernode} if group.supernode else None
    secret = keys.secret_name(name) if keys else None
    # The group Secret first: the pods reference it (non-optional), so it must exist before they start.
    out: list[dict[str, Any]] = [secret_object(_meta(name, ns, labels, owner), keys, owner.uid)] if keys else []
    if lws:
        ctx = GroupContext(group.index, pods, f"$({C.ENV_LWS_LEADER_ADDRESS})",
                           {"value": f"$({C.ENV_LWS_WORKER_INDEX})"}, group.supernode, secret, keys)
        out.append({
            "apiVersion": f"{N.LWS_GROUP}/{N.LWS_VERSION}", "kind": "LeaderWorkerSet",
            "metadata": _meta(name, ns, labels, owner, notes),
            "spec": {"replicas": 1, "startupPolicy": "LeaderCreated", "leaderWorkerTemplate": {
                "size": pods, "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": pod_template(md, plan, group, ctx, rev, C.ROLE_LEADER),
                "workerTemplate": pod_template(md, plan, group, ctx, rev, C.ROLE_WORKER)}},
        })
    else:
        leader = f"{name}-0.{name}.{ns}.svc"
        ctx = GroupContext(group.index, pods, leader, {"valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.labels['{N.POD_INDEX_LABEL}']"}}}, group.supernode, secret, keys)
        template = pod_template(md, plan, group, ctx, rev, C.ROLE_LEADER if pods == 1 else None)
        out.append({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(name, ns, labels, owner, notes),
            "spec": {"replicas": pods, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": _selector(md, group.index, rev)}, "template": template},
        })
        out.append({
            "apiVersion": "v1", "kind": "Service", "metadata": _meta(name, ns, labels, owner),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": _selector(md, group.index, rev),
                     "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT},
                               {"name": C.PORT_HTTP, "port": md.spec.engine.port,
                                "targetPort": md.spec.engine.port},
                               *({"name": p["name"], "port": p["containerPort"], "targetPort": p["containerPort"]}
                                 for p in kv_events_ports(md))]},
        })
    out.append({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(name, ns, labels, owner),
        # Evicting any rank kills the whole group: voluntary disruptions go through the operator.
        "spec": {"minAvailable": pods, "selector": {"matchLabels": _selector(md, group.index, rev)}},
    })
    if policy:
        out.append(network_policy(_meta(name, ns, labels, owner), _selector(md, group.index, rev)))
    return out


def leader_service(md: ModelDeployment, *, lws: bool) -> dict[str, Any]:
    ns = md.metadata.namespace or "default"
    selector = {C.LABEL_DEPLOYMENT: N.label_value(md.metadata.name)}
    if lws:
        selector[C.LABEL_ROLE] = C.ROLE_LEADER
    else:
        selector[N.POD_INDEX_LABEL] = "0"
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(N.leader_service_name(md.metadata.name), ns, N.deployment_labels(md.metadata.name),
                          owner_of(md), leader_annotations(md)),
        "spec": {"selector": selector, "ports": [{"name": C.PORT_HTTP, "port": md.spec.engine.port,
                                                  "targetPort": md.spec.engine.port, "protocol": "TCP"}]},
    }


def desired_objects(md: ModelDeployment, plan: Plan, rev: str, *, lws: bool,
                    indices: set[int] | None = None, keys: GroupKeys | None = None,
                    policy: bool = False) -> list[dict[str, Any]]:
    """All desired objects: the leader Service plus the objects of every *placed* group (or `indices`)."""
    out = [leader_service(md, lws=lws)]
    for group in plan.groups:
        if group.placed and (indices is None or group.index in indices):
            out += group_objects(md, plan, group, rev, lws=lws, keys=keys, policy=policy)
    return copy.deepcopy(out)
