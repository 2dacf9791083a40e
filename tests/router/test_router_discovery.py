"""Discovery (file reload, kubernetes translation), the stats parser, config and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from supernode.api import constants as C
from supernode.api.endpoints import Endpoint
from supernode.api.models import EngineType, Mode
from supernode.router.config import load_config
from supernode.router.discovery.file import FileDiscovery
from supernode.router.discovery.kubernetes import endpoint_from_pod, endpoints_from_objects
from supernode.router.stats import engine_stats, parse_prometheus

ROOT = Path(__file__).resolve().parents[2]


class Pod:
    """Fluent builder for leader pod objects."""

    def __init__(self, name: str, deployment: str = "v4-flash", ns: str = "llm"):
        self.obj: dict[str, Any] = {
            "metadata": {"name": name, "namespace": ns, "labels": {C.LABEL_ROLE: C.ROLE_LEADER,
                                                                   C.LABEL_DEPLOYMENT: deployment,
                                                                   C.LABEL_GROUP: "1"}, "annotations": {}},
            "spec": {"containers": [{"name": "engine", "ports": [{"name": "http", "containerPort": 8100}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
        }

    def annotate(self, key: str, value: str) -> Pod:
        self.obj["metadata"]["annotations"][key] = value
        return self

    def label(self, key: str, value: str) -> Pod:
        self.obj["metadata"]["labels"][key] = value
        return self

    def not_ready(self) -> Pod:
        self.obj["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        return self

    def no_ip(self) -> Pod:
        del self.obj["status"]["podIP"]
        return self


def md(name: str = "v4-flash", *, capacity_limited: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "llm"},
            "spec": {"model": {"name": "deepseek-v4-flash", "aliases": ["deepseek-chat"]}, "modes": ["non-think"],
                     "engine": {"type": "vllm"}},
            "status": {"conditions": [{"type": C.COND_CAPACITY_LIMITED,
                                       "status": "True" if capacity_limited else "False"}]}}


def test_leader_pod_and_deployment_become_an_endpoint() -> None:
    eps = endpoints_from_objects([Pod("p0").obj], [md(capacity_limited=True)])
    assert eps == [Endpoint(url="http://10.0.0.5:8100", model="deepseek-v4-flash", aliases=["deepseek-chat"],
                            modes=[Mode.NON_THINK], deployment="llm/v4-flash", group=1, engine_type=EngineType.VLLM,
                            ready=True, draining=False, capacity_limited=True)]


def test_annotations_override_and_draining_and_readiness() -> None:
    pod = (Pod("p0").annotate(C.ANNOTATION_MODES, "think-high,think-max").annotate(C.ANNOTATION_DRAINING, "true")
           .annotate(C.ANNOTATION_ENGINE_TYPE, "sglang").not_ready())
    ep = endpoint_from_pod(pod.obj, md())
    assert ep is not None
    assert ep.modes == [Mode.THINK_HIGH, Mode.THINK_MAX] and ep.draining and not ep.ready
    assert ep.engine_type is EngineType.SGLANG


def test_workers_pods_without_ip_or_model_are_skipped() -> None:
    worker = Pod("w").label(C.LABEL_ROLE, C.ROLE_WORKER).obj
    assert endpoints_from_objects([worker, Pod("x").no_ip().obj], [md()]) == []
    orphan = Pod("o", deployment="gone").obj  # no ModelDeployment and no model label
    assert endpoint_from_pod(orphan, None) is None
    labelled = Pod("l", deployment="gone").label(C.LABEL_MODEL, "m").obj
    ep = endpoint_from_pod(labelled, None)
    assert ep is not None and ep.model == "m" and ep.modes == list(Mode)


def test_prometheus_parser_and_engine_name_maps() -> None:
    text = ('# HELP x\nvllm:num_requests_running{model_name="a"} 3\nvllm:num_requests_running{model_name="b"} 2\n'
            'vllm:num_requests_waiting 4.0\nvllm:kv_cache_usage_perc 0.5\nbad line\nsglang:num_running_reqs 7\n'
            'sglang:num_queue_reqs{x="}"} 1\nsglang:token_usage 0.25\nnan_metric NaN\n')
    samples = parse_prometheus(text)
    assert samples["vllm:num_requests_running"] == 5 and "nan_metric" not in samples
    v = engine_stats(text, EngineType.VLLM)
    assert (v.running, v.waiting, v.kv_usage) == (5, 4, 0.5)
    s = engine_stats(text, EngineType.SGLANG)
    assert (s.running, s.waiting, s.kv_usage) == (7, 1, 0.25)


async def test_file_discovery_reloads_on_change_and_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "eps.yaml"
    path.write_text("endpoints:\n- url: http://a\n  model: m\n")
    seen: list[list[str]] = []
    d = FileDiscovery(path, lambda eps: seen.append([e.url for e in eps]), poll_interval_s=0.02)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.sleep(0.05)
        assert seen == [["http://a"]]
        path.write_text("endpoints:\n- url: http://b\n  model: m\n  maxConcurrency: 4\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        for _ in range(50):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert seen[-1] == ["http://b"]
        path.write_text("endpoints: [{url: 1}]")  # invalid: kept the last set
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
        await asyncio.sleep(0.1)
        assert seen[-1] == ["http://b"] and d.last_error and "model" in d.last_error
    finally:
        task.cancel()


def test_config_relative_path_and_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("discovery: {type: local, path: eps.json}\nrouting: {picker: {name: argmax}}\n"
                                        "admission: null\n")
    cfg = load_config(tmp_path / "r.yaml")
    assert cfg.discovery.path == str(tmp_path / "eps.json")
    (tmp_path / "bad.yaml").write_text("discovery: {type: local, path: e.json}\nroutng: {}\n")
    with pytest.raises(ValueError, match="routng"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "nopath.yaml").write_text("discovery: {type: static}\n")
    with pytest.raises(ValueError, match=r"discovery\.path"):
        load_config(tmp_path / "nopath.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_router_serves_with_local_discovery(tmp_path: Path) -> None:
    (tmp_path / "eps.json").write_text(json.dumps({"endpoints": [{"url": "http://127.0.0.1:9", "model": "m"}]}))
    (tmp_path / "r.yaml").write_text("discovery: {type: local, path: eps.json}\nhealth: {scrape_interval_s: 0}\n"
                                        "admission: null\n")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "supernode.cli", "router", "--config", str(tmp_path / "r.yaml"),
                             "--port", str(port)], env=os.environ.copy(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError(proc.stdout.read().decode() if proc.stdout else "no start") from None
                time.sleep(0.1)
        assert [m["id"] for m in r.json()["data"]] == ["m"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_router_rejects_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("discovery: {type: nope}\n")
    out = subprocess.run([sys.executable, "-m", "supernode.cli", "router", "--config", str(tmp_path / "r.yaml")],
                         capture_output=True, text=True, env=os.environ.copy(), cwd=ROOT, timeout=30)
    assert out.returncode == 2 and "discovery.type" in out.stderr


def test_example_router_config_and_endpoints_parse() -> None:
    cfg = load_config(ROOT / "examples" / "router" / "router.yaml")
    assert cfg.discovery.path == str(ROOT / "examples" / "router" / "endpoints.json")
    from supernode.router.discovery.file import parse_endpoint_file

    eps = parse_endpoint_file((ROOT / "examples" / "router" / "endpoints.json").read_text())
    assert [e.engine_type.value for e in eps] == ["builtin", "vllm"]
