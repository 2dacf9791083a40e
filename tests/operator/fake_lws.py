"""A test-side LeaderWorkerSet controller on the emulator's store (what the LWS controller, its pod webhook
and the scheduler + kubelet would do), enough to run the operator in LWS mode:

* group `g` of LeaderWorkerSet `n` is a leader pod `n-g` and workers `n-g-1 … n-g-(size-1)`, as LWS names
  them (its leader StatefulSet `n`, one worker StatefulSet `n-g` per group with ordinals from 1);
* every pod carries `leaderworkerset.sigs.k8s.io/name`, `/group-index`, `/worker-index` (0 = leader) and
  `/group-key`, the `/size` annotation (workers also `/leader-name`), and the `LWS_LEADER_ADDRESS`,
  `LWS_GROUP_SIZE`, `LWS_WORKER_INDEX` environment the webhook injects;
* workers start once their leader exists (`startupPolicy: LeaderCreated`); with
  `RecreateGroupOnPodRestart` a group that loses any pod after it was complete is recreated whole (its
  leader deleted, the workers with it); workers are owned by their leader (as LWS's worker StatefulSet
  is), leaders by the LeaderWorkerSet, so deleting either collects the rest;
* pods go to the nodes of the template's required node affinity (fake_cluster._nodes_of), Ready at once.
Not emulated: rolling updates of the LWS template, `replicas` scale-down, subgroups, exclusive placement.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fake_cluster import _nodes_of
from k8s_emulator import LWS_KIND, K8sEmulator

LWS = "leaderworkerset.sigs.k8s.io/"
NAME, GROUP_INDEX, WORKER_INDEX, GROUP_KEY = (LWS + k for k in ("name", "group-index", "worker-index", "group-key"))
SIZE, LEADER_NAME = LWS + "size", LWS + "leader-name"
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": f"{LWS_KIND.plural}.{LWS_KIND.group}"},
       "spec": {"group": LWS_KIND.group, "scope": "Namespaced", "names": {
           "plural": LWS_KIND.plural, "singular": "leaderworkerset", "kind": LWS_KIND.kind},
           "versions": [{"name": LWS_KIND.version, "served": True, "storage": True}]}}


async def install(emu: K8sEmulator) -> None:
    """The LWS API and its CRD (the operator switches to LWS mode when the CRD is there)."""
    emu.declare(LWS_KIND)
    await emu.put_object(CRD)


def _owner(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
             "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


class FakeLws:
    def __init__(self, emu: K8sEmulator, set_ready: Any) -> None:
        self.emu, self.set_ready = emu, set_ready
        self.complete: set[tuple[str, str]] = set()  # (namespace, leader pod) groups seen with every pod
        self.pods_created = 0

    def _pod(self, lws: dict[str, Any], group: int, worker: int, nodes: list[str] | None,
             leader: dict[str, Any] | None) -> dict[str, Any]:
        meta, spec = lws["metadata"], lws["spec"]["leaderWorkerTemplate"]
        ns, name, size = meta["namespace"], meta["name"], int(spec["size"])
        template = spec["leaderTemplate"] if worker == 0 else spec["workerTemplate"]
        leader_name = f"{name}-{group}"
        key = hashlib.sha1(f"{ns}/{leader_name}".encode()).hexdigest()
        labels = {**template["metadata"].get("labels", {}), NAME: name, GROUP_INDEX: str(group),
                  WORKER_INDEX: str(worker), GROUP_KEY: key}
        notes = {**template["metadata"].get("annotations", {}), SIZE: str(size)}
        if worker:
            notes[LEADER_NAME] = leader_name
        env = [{"name": "LWS_LEADER_ADDRESS", "value": f"{leader_name}.{name}.{ns}"},
               {"name": "LWS_GROUP_SIZE", "value": str(size)}, {"name": "LWS_WORKER_INDEX", "value": str(worker)}]
        container = template["spec"]["containers"][0]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": leader_name if worker == 0 else f"{leader_name}-{worker}", "namespace": ns, "labels": labels,
            "annotations": notes, "ownerReferences": _owner(leader if leader is not None else lws)},
            "spec": {"nodeName": nodes[worker % len(nodes)] if nodes else None, "containers": [
                {"name": container["name"], "env": env + list(container.get("env", [])),
                 "resources": container.get("resources", {}), "ports": container.get("ports", [])}]}}

    async def _create(self, pod: dict[str, Any]) -> dict[str, Any]:
        created = await self.emu.put_object(pod)
        self.pods_created += 1
        if pod["spec"]["nodeName"]:
            await self.set_ready(pod["metadata"]["namespace"], pod["metadata"]["name"])
        return created

    async def step(self) -> None:
        if (LWS_KIND.group, LWS_KIND.plural) not in self.emu.kinds:
            return
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in self.emu.objects_of("pods")}
        node_labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {}
                       for n in self.emu.objects_of("nodes", copy_=False)}
        for lws in self.emu.objects_of(LWS_KIND.plural, LWS_KIND.group):
            meta, spec = lws["metadata"], lws["spec"]
            ns, size = meta["namespace"], int(spec["leaderWorkerTemplate"]["size"])
            nodes = _nodes_of({"spec": {"template": spec["leaderWorkerTemplate"]["leaderTemplate"]}}, node_labels)
            for group in range(int(spec.get("replicas", 1))):
                leader_name = f"{meta['name']}-{group}"
                workers = [f"{leader_name}-{w}" for w in range(1, size)]
                leader = pods.get((ns, leader_name))
                missing = [w for w in workers if (ns, w) not in pods]
                if leader is not None and missing and (ns, leader_name) in self.complete:
                    # RecreateGroupOnPodRestart: one rank gone, the whole group starts over.
                    self.complete.discard((ns, leader_name))
                    await self.emu.delete_object("pods", ns, leader_name)
                    continue
                if leader is None:
                    self.complete.discard((ns, leader_name))
                    leader = await self._create(self._pod(lws, group, 0, nodes, None))
                for worker in range(1, size):
                    if (ns, f"{leader_name}-{worker}") not in pods:
                        await self._create(self._pod(lws, group, worker, nodes, leader))
                self.complete.add((ns, leader_name))
