"""The drain watch's decisions without a cluster: which deployments it asks about, when it asks at all."""

from __future__ import annotations

from typing import Any

import pytest

from supernode.api import constants as C
from supernode.operator.drain_watch import DrainWatch, DrainWatchConfig, draining


def pod(name: str, deployment: str, **notes: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "llm", "labels": {C.LABEL_DEPLOYMENT: deployment},
                         "annotations": notes}}


class NoApi:
    """Any call is a failure: the watch must not touch the API."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call {name}")


async def no_lws_check() -> bool:
    raise AssertionError("asked whether LWS is installed")


def test_only_leaders_still_draining_count() -> None:
    pods = [pod("a-0", "a", **{C.ANNOTATION_DRAINING: "true"}), pod("b-0", "b"),
            pod("c-0", "c", **{C.ANNOTATION_DRAINING: "true", C.ANNOTATION_DRAINED: "true"})]
    assert draining(pods) == {("llm", "a")}


async def test_nothing_draining_costs_no_request() -> None:
    watch = DrainWatch(NoApi(), DrainWatchConfig(), lws=no_lws_check)  # type: ignore[arg-type]
    assert await watch.tick([{"metadata": {"name": "b", "namespace": "llm"}}], [pod("b-0", "b")]) == []


async def test_unreachable_routers_mark_nothing_and_leave_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    config = DrainWatchConfig(router_urls=("http://127.0.0.1:9/autoscaling/signals",), timeout_seconds=0.5)
    watch = DrainWatch(NoApi(), config, lws=no_lws_check)  # type: ignore[arg-type]
    pods = [pod("a-0", "a", **{C.ANNOTATION_DRAINING: "true"})]
    try:
        for _ in range(2):
            assert await watch.tick([{"metadata": {"name": "a", "namespace": "llm"}}], pods) == []
    finally:
        await watch.close()
    warnings = [r for r in caplog.records if "drainTimeoutSeconds" in r.getMessage()]
    assert len(warnings) == 1, "one warning per distinct problem"


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="drain watch interval must be > 0"):
        DrainWatchConfig(interval_seconds=0)


def test_cli_drain_poll_and_device_info_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    from supernode.cli.main import build_parser
    from supernode.cli.operator import _drain_config

    monkeypatch.setenv("POD_NAMESPACE", "sn")
    args = build_parser().parse_args(["operator", "--router-ops-port", "9191"])
    assert args.device_info_namespace == "kube-system"
    assert _drain_config(args) == DrainWatchConfig(router_namespace="sn", router_ops_port=9191, interval_seconds=5.0)
    assert _drain_config(build_parser().parse_args(["operator", "--drain-poll", "0"])) is None
    with pytest.raises(ValueError, match="--drain-poll must be >= 0"):
        _drain_config(build_parser().parse_args(["operator", "--drain-poll", "-1"]))
    assert build_parser().parse_args(["operator", "--device-info-namespace", ""]).device_info_namespace == ""


class Workloads:
    """The two calls mark_drained makes: list the deployment's workloads, patch and report the marked ones."""

    def __init__(self, workloads: list[dict[str, Any]]) -> None:
        self.workloads, self.patched = workloads, []  # type: ignore[var-annotated]

    async def list_children(self, res: Any, ns: str, selector: str) -> list[dict[str, Any]]:
        wanted = dict(kv.split("=") for kv in selector.split(","))
        return [w for w in self.workloads if all(w["metadata"]["labels"].get(k) == v for k, v in wanted.items())]

    async def patch(self, res: Any, ns: str, name: str, body: dict[str, Any]) -> None:
        self.patched.append(name)

    async def post_event(self, *_: Any) -> None:
        pass


async def test_group_indexes_restart_per_pool_so_idle_groups_are_marked_in_their_own_pool() -> None:
    from supernode.operator.drain_watch import mark_drained

    def sts(name: str, pool: str, group: int) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {C.LABEL_DEPLOYMENT: "v4", C.LABEL_POOL: pool,
                                                      C.LABEL_GROUP: str(group)},
                             "annotations": {C.ANNOTATION_DRAINING: "true"}}}

    client = Workloads([sts("v4-h200-g0", "h200", 0), sts("v4-ascend-g0", "ascend", 0)])
    body = {"metadata": {"name": "v4", "namespace": "llm"}}
    assert await mark_drained(client, body, {0}, False, "h200") == 1  # type: ignore[arg-type]
    assert client.patched == ["v4-h200-g0"]  # the Ascend pool's group 0 may still be busy
