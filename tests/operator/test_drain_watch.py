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
