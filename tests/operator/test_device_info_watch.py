"""The device-info watch on its own: what reaches the handler across list, watch, a failed stream and a
relist (the client is scripted; the end-to-end path runs in test_operator_fault_modes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from supernode.api import constants as C
from supernode.operator.device_info_watch import DeviceInfoWatch
from supernode.operator.kube import ApiError

NS = C.ASCEND_DEVICE_INFO_NAMESPACE


def cm(name: str, rv: str = "1", ns: str = NS) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv}}


class ScriptedClient:
    """Answers each list from `lists` in turn; each watch streams the next batch of `streams`, then fails
    (an exception) or ends."""

    def __init__(self, lists: list[list[dict[str, Any]]], streams: list[list[dict[str, Any]] | Exception]) -> None:
        self.lists, self.streams = lists, streams
        self.calls: list[tuple[str, str]] = []

    async def list_configmaps(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", namespace))
        return self.lists.pop(0), "10"

    async def watch_configmaps(self, namespace: str, rv: str, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", f"{namespace}@{rv}"))
        if not self.streams:
            await asyncio.sleep(3600)  # an open stream with nothing new
        batch = self.streams.pop(0)
        if isinstance(batch, Exception):
            raise batch
        for event in batch:
            yield event  # then the server ends the stream


async def test_only_reports_of_the_namespace_reach_the_handler_and_a_relist_reports_what_vanished() -> None:
    report = C.ASCEND_DEVICE_INFO_PREFIX
    client = ScriptedClient(
        lists=[[cm(f"{report}n0"), cm(f"{report}n1"), cm("coredns")], [cm(f"{report}n0", "12")]],
        streams=[[{"type": "MODIFIED", "object": cm(f"{report}n0", "11")},
                  {"type": "ADDED", "object": cm("kube-proxy", "11")}],
                 ApiError(500, "InternalError", "stream broke")])
    seen: list[tuple[str, str]] = []

    async def handle(type_: str, obj: Mapping[str, Any]) -> None:
        seen.append((type_, obj["metadata"]["name"]))

    watch = DeviceInfoWatch(client, NS, handle, retry_seconds=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(200):
            if ("DELETED", f"{report}n1") in seen:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen[:3] == [("ADDED", f"{report}n0"), ("ADDED", f"{report}n1"), ("MODIFIED", f"{report}n0")]
    # The first stream ends quietly (resumed from its last version); the second fails: relist.
    assert ("DELETED", f"{report}n1") in seen and seen[-1] == ("ADDED", f"{report}n0")
    assert client.calls[:4] == [("list", NS), ("watch", f"{NS}@10"), ("watch", f"{NS}@11"), ("list", NS)]
    assert watch.synced.is_set()
