"""spec.engine.kvEvents rendered per engine: flags each engine accepts, named ports on the leader, the
group's headless Service, and a revision that rolls the groups only when the setting changes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from builders import MDBuilder, make_plan, operator_md

from supernode.api import constants as C
from supernode.operator import builders, naming
from supernode.operator.engines import kv_events_args

# The fields of each engine's KV events config (vLLM's KVEventsConfig in vllm/config/kv_events.py, v0.11;
# SGLang's KVEventsConfig in sglang/srt/disaggregation/kv_events.py): what we render must be among them.
VLLM_FIELDS = {"enable_kv_cache_events", "publisher", "endpoint", "replay_endpoint", "buffer_steps", "hwm",
               "max_queue_size", "topic"}
SGLANG_FIELDS = {"publisher", "endpoint", "replay_endpoint", "buffer_steps", "hwm", "max_queue_size", "topic"}


def render(md: MDBuilder, *, lws: bool = False) -> list[dict[str, Any]]:
    obj = md.obj()
    return builders.desired_objects(obj, make_plan(obj, [["n0"]]), naming.revision(obj), lws=lws)


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    sts = next(o for o in objs if o["kind"] == "StatefulSet")
    return sts["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def config_arg(args: list[str]) -> dict[str, Any]:
    return json.loads(args[args.index("--kv-events-config") + 1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("engine", "fields"), [("vllm", VLLM_FIELDS), ("sglang", SGLANG_FIELDS)])
def test_vllm_and_sglang_get_a_zmq_config_that_binds_the_named_ports(engine: str, fields: set[str]) -> None:
    c = container(render(operator_md().engine(engine).kv_events(port=7100, replayPort=7101, topic="t")))
    config = config_arg(c["args"])
    assert set(config) <= fields
    assert config["publisher"] == "zmq" and config["topic"] == "t" and config["buffer_steps"] == 10_000
    assert (config["endpoint"], config["replay_endpoint"]) == ("tcp://*:7100", "tcp://*:7101")  # "*": bind
    assert config.get("enable_kv_cache_events") is (True if engine == "vllm" else None)
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert (named[C.PORT_KV_EVENTS], named[C.PORT_KV_REPLAY]) == (7100, 7101)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_each_data_parallel_rank_gets_named_ports_at_the_engines_offsets(engine: str) -> None:
    # vLLM and SGLang bind rank r's PUB and replay sockets on the configured ports + r (offset_endpoint_port);
    # the config names rank 0's ports only, the pod and the group Service name every rank's.
    md = operator_md().engine(engine).kv_events(port=7100, replayPort=7200).accelerator("nvidia-h200", 8)
    objs = render(md.parallelism(tensor=2, data=4))
    c = container(objs)
    assert (config_arg(c["args"])["endpoint"], config_arg(c["args"])["replay_endpoint"]) == ("tcp://*:7100",
                                                                                             "tcp://*:7200")
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert {n: v for n, v in named.items() if n.startswith("kv-")} == {
        C.PORT_KV_EVENTS: 7100, "kv-events-1": 7101, "kv-events-2": 7102, "kv-events-3": 7103,
        C.PORT_KV_REPLAY: 7200, "kv-replay-1": 7201, "kv-replay-2": 7202, "kv-replay-3": 7203}
    headless = next(o for o in objs if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None")
    assert {p["name"] for p in headless["spec"]["ports"]} >= set(named)
    assert all(len(name) <= 15 for name in named)  # an IANA service name
    assert C.kv_port_name(C.PORT_KV_REPLAY, 1023) == "kv-replay-1023" and len("kv-replay-1023") <= 15


@pytest.mark.parametrize(("lws", "tensor", "data", "local"), [(False, 8, 2, 1), (True, 2, 16, 4), (False, 2, 4, None)])
def test_pods_of_a_spread_group_say_how_many_ranks_each_runs(lws: bool, tensor: int, data: int,
                                                             local: int | None) -> None:
    # DP 2 over two pods, DP 16 over four pods (four local ranks each): each pod runs `local` ranks (global
    # ranks i*local.. on pod i, ports offset by the global rank) and names every rank's. DP 4 in one pod:
    # no annotation (the template of such groups is what it was before ranks could spread).
    md = (operator_md().engine("vllm").kv_events(port=7100, replayPort=7200).accelerator("nvidia-h200", 8)
          .parallelism(tensor=tensor, data=data))
    obj = md.obj()
    pods = obj.spec.pods_per_group
    objs = builders.desired_objects(obj, make_plan(obj, [[f"n{i}" for i in range(pods)]]), naming.revision(obj),
                                    lws=lws)
    work = next(o for o in objs if o["kind"] in ("StatefulSet", "LeaderWorkerSet"))
    templates = ([work["spec"]["template"]] if not lws else [work["spec"]["leaderWorkerTemplate"][k]
                                                             for k in ("leaderTemplate", "workerTemplate")])
    for t in templates:
        assert t["metadata"]["annotations"].get(C.ANNOTATION_DP_LOCAL) == (str(local) if local else None)
        named = {p["name"]: p["containerPort"] for p in t["spec"]["containers"][0]["ports"]}
        assert all(named[C.kv_port_name(C.PORT_KV_EVENTS, r)] == 7100 + r for r in range(data))
        assert all(named[C.kv_port_name(C.PORT_KV_REPLAY, r)] == 7200 + r for r in range(data))
    assert pods * (local or data) == data


def test_the_builtin_engine_publishes_once_whatever_its_data_parallel_size() -> None:
    c = container(render(operator_md().engine("builtin").kv_events().accelerator("nvidia-h200", 8)
                         .parallelism(tensor=4, data=2)))
    assert {p["name"] for p in c["ports"]} == {C.PORT_HTTP, "rendezvous", C.PORT_KV_EVENTS, C.PORT_KV_REPLAY}


def test_user_args_still_come_last() -> None:
    c = container(render(operator_md().engine("sglang", args=["--page-size", "16"]).kv_events()))
    assert c["args"][-2:] == ["--page-size", "16"] and "--kv-events-config" in c["args"]


def test_builtin_flags_are_what_the_engines_own_parser_accepts(tmp_path: Path) -> None:
    from supernode.cli import engine_serve
    from supernode.engine.config import EngineConfig

    c = container(render(operator_md().engine("builtin").kv_events(topic="v4", bufferSteps=77)))
    parser = argparse.ArgumentParser()
    engine_serve.register(parser.add_subparsers())
    (tmp_path / "config.json").write_text("{}")
    args = parser.parse_args(["serve", str(tmp_path), *c["args"]])
    cfg = EngineConfig.from_values({**vars(args), "model_dir": engine_serve.model_dir(args)})  # what serve builds
    assert (cfg.kv_events_endpoint, cfg.kv_events_replay_endpoint) == ("tcp://*:5557", "tcp://*:5558")
    assert cfg.kv_events_topic == "v4" and cfg.kv_events_buffer_steps == 77


def test_without_kv_events_nothing_is_rendered() -> None:
    for engine in ("builtin", "vllm", "sglang", "mindie"):
        c = container(render(operator_md().engine(engine)))
        assert not any("kv-events" in a for a in c["args"])
        assert {p["name"] for p in c["ports"]} == {C.PORT_HTTP, "rendezvous"}
        assert kv_events_args(operator_md().engine(engine).obj()) == []


def test_group_service_exposes_the_ports_and_the_deployment_service_does_not() -> None:
    objs = render(operator_md().engine("vllm").kv_events())
    leader_svc, headless = (o for o in objs if o["kind"] == "Service")
    assert {p["name"] for p in leader_svc["spec"]["ports"]} == {C.PORT_HTTP}  # load-balanced over groups: useless
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == {
        "rendezvous": 29500, C.PORT_HTTP: 8000, C.PORT_KV_EVENTS: 5557, C.PORT_KV_REPLAY: 5558}


def test_leader_worker_set_templates_carry_the_ports() -> None:
    md = operator_md().engine("vllm").kv_events().accelerator("nvidia-h200", 8).parallelism(tensor=16)
    obj = md.obj()
    (lws,) = (o for o in builders.desired_objects(obj, make_plan(obj, [["n0", "n1"]]), naming.revision(obj),
                                                  lws=True) if o["kind"] == "LeaderWorkerSet")
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert C.PORT_KV_EVENTS in {p["name"] for p in leader["ports"]} and "--kv-events-config" in leader["args"]


def test_revision_changes_only_with_the_setting() -> None:
    base = operator_md().engine("vllm")
    plain = naming.revision(base.obj())
    assert naming.revision(operator_md().engine("vllm").obj()) == plain
    with_kv = naming.revision(operator_md().engine("vllm").kv_events().obj())
    moved = naming.revision(operator_md().engine("vllm").kv_events(port=6000).obj())
    assert len({plain, with_kv, moved}) == 3


def test_a_pool_publishes_with_its_own_engine() -> None:
    from supernode.api.pools import pool_views

    md = (operator_md().engine("vllm").accelerator("nvidia-h200", 8).parallelism(tensor=8)
          .pool("h200").pool("cpu", "cpu", engine={"type": "builtin", "kvEvents": {"port": 6100, "replayPort": 6101}},
                             parallelism={"tensor": 1}))
    by_pool = {view.name: kv_events_args(view.md) for view in pool_views(md.obj())}
    assert by_pool["h200"] == [] and "tcp://*:6100" in by_pool["cpu"]
