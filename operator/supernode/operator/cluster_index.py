"""What planning reads from every pod and node, kept up to date by events instead of recomputed per pass (pure).

A pass plans one deployment against the whole cluster. Recomputing the cluster's usage from every pod and
node on each pass made a pass O(nodes + pods), so a burst of N new deployments cost O(N x cluster). Here:

- `PodIndex` is fed every pod change (the pod informer calls `put` / `remove`, O(1) each) and keeps the
  devices held per node, the pods of each deployment and which groups have pods (reservations end there);
- `NodeIndex` parses a node list once per list object (the node informer hands out the same list until a
  node changes) into node bases and the lost (not Ready) set;
- `inventory` combines both into the planner's `Inventory`, with one pass's adjustments: this deployment's
  kept pods do not count against it, reservations' placeholder pods do.

`inputs.planning_inputs` gives the same result with or without these indexes (table-tested): without them
it parses the lists it is handed (the CLI, tests); with them only what changed is parsed again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from supernode.api import constants as C
from supernode.operator import naming as N
from supernode.operator.inventory import NodeBase, PodUsage, node_base, pod_usage, with_used
from supernode.operator.types import Inventory, NodeInfo

Pod = Mapping[str, Any]
GroupKey = tuple[Any, ...]  # (namespace, deployment label, pool, group index, revision)


def group_key_of(pod: Pod) -> GroupKey | None:
    """The group a pod belongs to, as `inputs.live_reservations` matches reservations (None: no metadata)."""
    meta = pod.get("metadata") or {}
    if not meta:
        return None
    labels = meta.get("labels") or {}
    return (meta.get("namespace"), labels.get(C.LABEL_DEPLOYMENT), N.pool_of(pod),
            str(labels.get(C.LABEL_GROUP, "")), str(labels.get(C.LABEL_REVISION, "")))


def _owner(pod: Pod) -> tuple[Any, Any]:
    meta = pod.get("metadata") or {}
    return (meta.get("namespace"), (meta.get("labels") or {}).get(C.LABEL_DEPLOYMENT))


def _add(into: dict[str, dict[str, int]], node: str, devices: Mapping[str, int], sign: int) -> None:
    held = into.setdefault(node, {})
    for res, n in devices.items():
        left = held.get(res, 0) + sign * n
        if left:
            held[res] = left
        else:
            held.pop(res, None)
    if not held:
        into.pop(node, None)


class PodIndex:
    """Every pod's device usage, by node; each deployment's pods; the groups that have pods. O(1) per change
    (keys in the order the informer holds them, so a deployment's pods come out in the informer's order).

    Bounded by the pods it is given: a removed pod leaves nothing behind."""

    def __init__(self) -> None:
        self._pods: dict[Any, tuple[Pod, PodUsage]] = {}
        self.used: dict[str, dict[str, int]] = {}  # node -> devices held there by pods (non-zero sums only)
        self._by_owner: dict[tuple[Any, Any], dict[Any, Pod]] = {}
        self._groups: Counter[GroupKey] = Counter()
        self._noted: set[Any] = set()  # pods whose parse left notes (malformed): planning takes the full path
        self.changed: set[str] = set()  # nodes whose usage changed since NodeIndex last looked (it clears this)
        # Usage of pods handed to `usage_of` (reservations' placeholders: the same dicts pass after pass), by
        # identity; bounded (cleared past 4096 entries).
        self._seen: dict[int, tuple[Pod, PodUsage]] = {}

    def reset(self, pods: Iterable[tuple[Any, Pod]]) -> None:
        """Replace everything (a relist)."""
        self.changed |= set(self.used)
        self._pods, self.used, self._by_owner, self._groups, self._noted = {}, {}, {}, Counter(), set()
        for key, pod in pods:
            self.put(key, pod)

    def put(self, key: Any, pod: Pod) -> None:
        """`pod` added or changed (stored under `key`, e.g. (namespace, name))."""
        old = self._pods.get(key)
        owner = _owner(pod)
        if old is not None:
            self._forget(key, old, keep_owner=_owner(old[0]) == owner)
        usage = pod_usage(0, pod)
        self._pods[key] = (pod, usage)  # a known key keeps its place
        if usage[0] is not None:
            _add(self.used, usage[0], usage[1], +1)
            self.changed.add(usage[0])
        if usage[2]:
            self._noted.add(key)
        mine = self._by_owner.setdefault(owner, {})
        moved = old is not None and key not in mine and len(mine) > 0
        mine[key] = pod
        if moved:  # relabelled into a deployment that has pods: keep the informer's order
            self._by_owner[owner] = {k: v[0] for k, v in self._pods.items() if k in mine}
        if (group := group_key_of(pod)) is not None:
            self._groups[group] += 1

    def remove(self, key: Any) -> None:
        old = self._pods.pop(key, None)
        if old is not None:
            self._forget(key, old, keep_owner=False)

    def _forget(self, key: Any, old: tuple[Pod, PodUsage], *, keep_owner: bool) -> None:
        pod, (node, devices, _) = old
        if node is not None:
            _add(self.used, node, devices, -1)
            self.changed.add(node)
        self._noted.discard(key)
        if not keep_owner:
            owner = _owner(pod)
            mine = self._by_owner.get(owner, {})
            mine.pop(key, None)
            if not mine:
                self._by_owner.pop(owner, None)
        if (group := group_key_of(pod)) is not None:
            self._groups[group] -= 1
            if self._groups[group] <= 0:
                del self._groups[group]

    @property
    def malformed(self) -> bool:
        """Some pod could not be parsed cleanly (its notes belong in the plan): use the full computation."""
        return bool(self._noted)

    def of_deployment(self, namespace: str, deployment: str, pool: str = "") -> list[Pod]:
        """What `inputs.own_pods(all pods, ...)` returns, without looking at other deployments' pods."""
        return [p for p in self._by_owner.get((namespace, deployment), {}).values() if N.pool_of(p) == pool]

    def has_group(self, key: GroupKey) -> bool:
        return key in self._groups

    def usage_of(self, pods: Iterable[Pod]) -> dict[str, dict[str, int]]:
        """Devices `pods` hold, per node (as they would count in the inventory). Read-only pods: a pod dict
        seen before is not parsed again."""
        out: dict[str, dict[str, int]] = {}
        for pod in pods:
            hit = self._seen.get(id(pod))
            if hit is None or hit[0] is not pod:
                if len(self._seen) > 4096:
                    self._seen.clear()
                hit = self._seen[id(pod)] = (pod, pod_usage(0, pod))
            node, devices, _ = hit[1]
            if node is not None:
                _add(out, node, devices, +1)
        return out


def lost_nodes(nodes: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Nodes whose Ready condition is not True (their pods count as failed)."""
    out = set()
    for node in nodes:
        ready = [c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
        if ready and ready[0].get("status") != "True":
            out.add(str(node["metadata"]["name"]))
    return frozenset(out)


class NodeIndex:
    """The planner's view of a node list, parsed once per list object (the node informer hands out the same
    list until a node changes; a node dict that did not change is not parsed again either)."""

    def __init__(self) -> None:
        self._list: Sequence[Mapping[str, Any]] | None = None
        self._parsed: dict[int, tuple[Mapping[str, Any], NodeBase]] = {}
        self.bases: list[NodeBase] = []
        self.lost: frozenset[str] = frozenset()
        self.malformed = False  # a node left notes, or two share a name: use the full computation
        self._infos: dict[tuple[int, tuple[tuple[str, int], ...]], tuple[NodeInfo, NodeInfo]] = {}
        # Every node with what all indexed pods hold on it, kept current from `PodIndex.changed`:
        self._current: list[NodeInfo] = []
        self._plain: list[NodeInfo] = []  # the same nodes without usage
        self._position: dict[str, int] = {}  # node name -> its place in _current
        self._current_for: PodIndex | None = None  # None: rebuild (the node list changed)

    def sync(self, nodes: Sequence[Mapping[str, Any]]) -> None:
        """Take `nodes` as the current node list (O(1) when it is the list of the last call)."""
        if nodes is self._list:
            return
        parsed: dict[int, tuple[Mapping[str, Any], NodeBase]] = {}
        bases: list[NodeBase] = []
        for i, node in enumerate(nodes):
            hit = self._parsed.get(id(node))
            base = hit[1] if hit is not None and hit[0] is node else node_base(i, node)
            if not base[1]:  # notes name the node's position: never reused
                parsed[id(node)] = (node, base)
            bases.append(base)
        names = [b[0].name for b in bases if b[0] is not None]
        self._list, self._parsed, self.bases = nodes, parsed, bases
        self.malformed = any(b[1] for b in bases) or len(set(names)) != len(names)
        self.lost = lost_nodes(nodes)
        self._current_for = None
        self._infos = {k: v for k, v in self._infos.items() if id(v[0]) in {id(b[0]) for b in bases}}

    def _with_used(self, node: NodeInfo, used: Mapping[str, int]) -> NodeInfo:
        key = (id(node), tuple(used.items()))
        hit = self._infos.get(key)
        if hit is None or hit[0] is not node:
            if len(self._infos) > 4 * max(64, len(self.bases)):  # bounded: (node, usage) pairs of the past go
                self._infos.clear()
            hit = self._infos[key] = (node, with_used(node, dict(used)))
        return hit[1]

    def _info(self, node: NodeInfo, used: Mapping[str, int] | None) -> NodeInfo:
        return self._with_used(node, used) if used else node

    def _refresh(self, pods: PodIndex) -> None:
        if self._current_for is not pods:
            self._plain = [b[0] for b in self.bases if b[0] is not None]
            self._current = [self._info(n, pods.used.get(n.name)) for n in self._plain]
            self._position = {n.name: i for i, n in enumerate(self._plain)}
            self._current_for = pods
        else:
            for name in pods.changed:
                if (i := self._position.get(name)) is not None:
                    self._current[i] = self._info(self._plain[i], pods.used.get(name))
        pods.changed.clear()

    def inventory(self, pods: PodIndex, without: Iterable[Pod] = (), extra: Iterable[Pod] = ()) -> Inventory:
        """Nodes with the devices every indexed pod holds, less those of `without` (indexed pods), plus those
        of `extra` (placeholders): what `inventory_from_k8s(nodes, indexed pods - without + extra)` gives the
        planner. O(changes since the last call + len(without) + len(extra)), plus one copy of the node tuple."""
        self._refresh(pods)
        delta = pods.usage_of(extra)
        for node, devices in pods.usage_of(without).items():
            _add(delta, node, devices, -1)
        out = list(self._current)
        for name, change in delta.items():
            if (i := self._position.get(name)) is None:
                continue
            merged = {name: dict(pods.used.get(name) or {})}
            _add(merged, name, change, +1)
            out[i] = self._info(self._plain[i], merged.get(name))
        return Inventory(nodes=tuple(out))
