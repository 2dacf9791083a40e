"""Writes each current Ascend group's rank-table ConfigMap (part of the executor: reads and writes through
the pass's client; what to write comes from the pure `ranktable_objects`)."""

from __future__ import annotations

from typing import Any, Protocol

from supernode.operator import naming as N
from supernode.operator.kube import CONFIGMAPS, KubeClient
from supernode.operator.pool_pass import PoolPass, event_prefix
from supernode.operator.ranktable_objects import RankTableError, group_configmap


class Pass(Protocol):
    """What of a reconcile pass this needs (reconcile._Run, an executor.Executor)."""

    client: KubeClient
    ns: str
    uid: str
    writes: int

    @property
    def reported(self) -> dict[tuple[str, str], str]: ...  # (deployment uid, group) -> the problem last posted

    async def create(self, obj: dict[str, Any]) -> None: ...

    async def event(self, type_: str, reason: str, message: str) -> None: ...


async def sync_rank_tables(run: Pass, passes: list[PoolPass], workloads: list[dict[str, Any]],
                           selector: str) -> None:
    """Each current group whose pods all carry their devices gets its rank table; a changed one (new pods
    after a gang restart) is rewritten. A malformed device annotation is one Warning Event per problem."""
    have = {o["metadata"]["name"]: o for o in await run.client.list_children(CONFIGMAPS, run.ns, selector)}
    by_name = {w["metadata"]["name"]: w for w in workloads}
    for pp in passes:
        for g in pp.inputs.groups:
            if g.draining or g.revision != pp.inputs.revision or g.name not in by_name:
                continue
            try:
                obj = group_configmap(g, pp.inputs.mine, by_name[g.name])
            except RankTableError as exc:
                if run.reported.get((run.uid, g.name)) != str(exc):
                    run.reported[(run.uid, g.name)] = str(exc)
                    await run.event("Warning", "RankTableInvalid", f"{event_prefix(pp.md)}group {g.index}: {exc}")
                continue
            if obj is None:
                continue
            obj = N.with_applied_hash(obj)
            name = obj["metadata"]["name"]
            current = have.get(name)
            if current is None:
                await run.create(obj)
                await run.event("Normal", "RankTableWritten", f"{event_prefix(pp.md)}group {g.index}: {name}")
            elif (current["metadata"].get("annotations") or {}).get(N.ANNOTATION_APPLIED_HASH) != \
                    obj["metadata"]["annotations"][N.ANNOTATION_APPLIED_HASH]:
                await run.client.patch(CONFIGMAPS, run.ns, name, obj)
                run.writes += 1
                await run.event("Normal", "RankTableWritten", f"{event_prefix(pp.md)}group {g.index}: {name} "
                                "regenerated")
