"""Every example is accepted, every bad spec refused with the same message by the API server's
checks (schema + CEL, via tests/crdcheck.py) and by the pydantic models; CEL and Python rules agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import MDBuilder, make_md
from crdcheck import apply_defaults, cel_results, crd_schema, server_errors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from supernode.api import rules
from supernode.api.models import AcceleratorType, ModelDeployment

ROOT = Path(__file__).resolve().parents[2]


def _example_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(ROOT.joinpath("examples").rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and doc.get("kind") == "ModelDeployment":
                docs.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return docs


EXAMPLES = _example_docs()


def test_the_examples_include_the_three_documented_deployments() -> None:
    names = {doc["metadata"]["name"] for _, doc in EXAMPLES}
    assert {"v4-pro", "v4-flash", "tiny"} <= names


@pytest.mark.parametrize(("where", "doc"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_example_is_accepted_by_schema_cel_and_pydantic(where: str, doc: dict[str, Any]) -> None:
    assert server_errors(doc) == []
    ModelDeployment.from_obj(doc)


def _pydantic_errors(obj: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        ModelDeployment.from_obj(obj)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]).replace(".[", "[")
            out.append((path + (err.get("ctx") or {}).get("field_path", ""), err["msg"]))
        return out
    return []


Mutation = Callable[[MDBuilder], MDBuilder]
# (case, mutation, expected field path, expected message for CEL rules (None: a schema check))
KV_PORTS_MSG = ("engine.kvEvents: the ports port..port+n-1 and replayPort..replayPort+n-1 (n = parallelism.data for "
                "vllm and sglang, whose data-parallel ranks each publish on the ports plus their rank; 1 for builtin) "
                "must not overlap, must end at 65535 at most and must not hold engine.port, 29500 (the rendezvous "
                "port) or 13345 (vLLM's data-parallel RPC port)")
KV_RANKS_MSG = ("engine.kvEvents with parallelism.data above 1 needs parallelism.data to be a multiple of the group's "
                "pods for vllm and sglang (each pod then runs whole data-parallel ranks and publishes them from its "
                "own address; the router maps every rank to the pod that runs it)")

BAD_SPECS: list[tuple[str, Mutation, str, str | None]] = [
    ("tensor below 1", lambda b: b.parallelism(tensor=0), "spec.parallelism.tensor", None),
    ("unknown accelerator", lambda b: b.accelerator("tpu-v5", 4), "spec.accelerator.type", None),
    ("unsupported source scheme", lambda b: b.set("spec.model.source", "ftp://x/y"), "spec.model.source", None),
    ("typo in a field name", lambda b: b.set("spec.replica", 2), "spec.replica", None),
    ("negative replicas", lambda b: b.replicas(-1), "spec.replicas", None),
    ("no modes", lambda b: b.modes(), "spec.modes", None),
    ("unknown mode", lambda b: b.modes("fast"), "spec.modes[0]", None),
    ("missing model", lambda b: b.unset("spec.model"), "spec.model", None),
    ("port out of range", lambda b: b.set("spec.engine.port", 70000), "spec.engine.port", None),
    ("unknown toleration effect", lambda b: b.tolerate("k", effect="Sometimes"),
     "spec.placement.tolerations[0].effect", None),
    ("empty alias", lambda b: b.model("m", ""), "spec.model.aliases[0]", None),
    ("cpu asking for devices", lambda b: b.accelerator("cpu", 4).parallelism(tensor=4),
     "spec.accelerator.devicesPerPod", "accelerator.devicesPerPod must be 0 when accelerator.type is cpu"),
    ("accelerator without devices", lambda b: b.accelerator("ascend-910c", 0),
     "spec.accelerator.devicesPerPod",
     "accelerator.devicesPerPod must be at least 1 for accelerator types other than cpu"),
    ("world not a multiple of devices per pod", lambda b: b.accelerator("ascend-910c", 16).parallelism(tensor=12),
     "spec.parallelism",
     "parallelism: tensor x pipeline x data must be a multiple of accelerator.devicesPerPod"),
    ("expert not dividing the world", lambda b: b.accelerator("nvidia-h200", 8).parallelism(tensor=8, expert=3),
     "spec.parallelism.expert", "parallelism.expert must divide tensor x pipeline x data"),
    ("autoscaling min above max", lambda b: b.replicas(3).autoscaling(3, 2), "spec.autoscaling.minReplicas",
     "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
    ("replicas above autoscaling max", lambda b: b.replicas(5).autoscaling(1, 4), "spec.replicas",
     "replicas must lie within autoscaling.minReplicas and autoscaling.maxReplicas"),
    ("replicas below autoscaling min", lambda b: b.replicas(1).autoscaling(2, 4), "spec.replicas",
     "replicas must lie within autoscaling.minReplicas and autoscaling.maxReplicas"),
    ("autoscaling down window shorter than up", lambda b: b.autoscaling(
        1, 1, behavior={"scaleUpStabilizationSeconds": 120, "scaleDownStabilizationSeconds": 60}),
     "spec.autoscaling.behavior.scaleDownStabilizationSeconds",
     "autoscaling.behavior.scaleDownStabilizationSeconds must not be shorter than "
     "autoscaling.behavior.scaleUpStabilizationSeconds"),
    ("autoscaling ready timeout within cold start", lambda b: b.autoscaling(
        1, 1, behavior={"coldStartSeconds": 600, "readyTimeoutSeconds": 600}),
     "spec.autoscaling.behavior.readyTimeoutSeconds",
     "autoscaling.behavior.readyTimeoutSeconds must be longer than autoscaling.behavior.coldStartSeconds "
     "(the pending guard would give up before a group can start)"),
    ("scale to zero under an external autoscaler", lambda b: b.replicas(0).autoscaling(0, 2, mode="External"),
     "spec.autoscaling.minReplicas",
     "autoscaling.minReplicas 0 needs autoscaling.mode Builtin (the router's cold-start hold and the wake-up on "
     "queued requests come from the builtin autoscaler)"),
    ("autoscaling kv target above 1", lambda b: b.autoscaling(1, 1, target={"kvCacheUsage": 1.5}),
     "spec.autoscaling.target.kvCacheUsage", None),
    ("autoscaling unknown mode", lambda b: b.autoscaling(1, 1, mode="Keda"), "spec.autoscaling.mode", None),
    ("autoscaling utilization 0", lambda b: b.autoscaling(1, 1, target={"utilization": 0}),
     "spec.autoscaling.target.utilization", None),
    ("autoscaling pool not a DNS label", lambda b: b.autoscaling(1, 1, pool="Pool_A"),
     "spec.autoscaling.pool", None),
    ("rollout that cannot progress", lambda b: b.rollout(0, 0), "spec.rollout",
     "rollout.maxSurge + rollout.maxUnavailable must be greater than 0 (a rollout could never progress)"),
    ("backoff above its cap", lambda b: b.set("spec.recovery", {"backoffSeconds": 100, "maxBackoffSeconds": 50}),
     "spec.recovery.backoffSeconds", "recovery.backoffSeconds must not exceed recovery.maxBackoffSeconds"),
    ("a mode twice", lambda b: b.modes("think-high", "think-high"), "spec.modes", "modes must not repeat a mode"),
    ("alias equal to the name", lambda b: b.model("m", "m"), "spec.model.aliases",
     "model.aliases must not contain model.name"),
    ("alias twice", lambda b: b.model("m", "a", "a"), "spec.model.aliases", "model.aliases must not repeat a name"),
    ("pool of cpu asking for devices", lambda b: b.pool("a", "cpu", 4), "spec.pools",
     "pools: accelerator.devicesPerPod must be 0 when accelerator.type is cpu (in every pool, with the fields it "
     "inherits)"),
    ("pool inheriting a parallelism its devices do not divide",
     lambda b: b.parallelism(tensor=12).pool("a", "ascend-910c", 16), "spec.pools",
     "pools: parallelism: tensor x pipeline x data must be a multiple of accelerator.devicesPerPod (in every pool, "
     "with the fields it inherits)"),
    ("a pool name twice", lambda b: b.pool("a").pool("a"), "spec.pools", "pools must not repeat a pool name"),
    ("a pool's autoscaling minimum above its maximum", lambda b: b.autoscaling(1, 4).pool(
        "a", minReplicas=3, maxReplicas=2), "spec.pools", "pools: minReplicas must not exceed maxReplicas"),
    ("a pool's maximum negative", lambda b: b.pool("a", maxReplicas=-1), "spec.pools[0].maxReplicas", None),
    ("pool name not a DNS label", lambda b: b.pool("Big_A"), "spec.pools[0].name", None),
    ("pool name too long", lambda b: b.pool("a" * 16), "spec.pools[0].name", None),
    ("pool capacity weight 0", lambda b: b.pool("a", capacityWeight=0), "spec.pools[0].capacityWeight", None),
    ("kv events from mindie", lambda b: b.engine("mindie").kv_events(), "spec.engine.kvEvents",
     "engine.kvEvents: mindie publishes no KV events (builtin, vllm and sglang do)"),
    ("kv events on the http port", lambda b: b.engine("vllm").kv_events(port=8000), "spec.engine.kvEvents",
     KV_PORTS_MSG),
    ("kv replay on the publisher port", lambda b: b.engine("sglang").kv_events(port=6000, replayPort=6000),
     "spec.engine.kvEvents", KV_PORTS_MSG),
    ("kv events from data-parallel ranks that each span two pods",
     lambda b: b.engine("vllm").kv_events(replayPort=5600).accelerator("nvidia-h200", 8).parallelism(tensor=16, data=2),
     "spec.engine.kvEvents", KV_RANKS_MSG),
    ("kv events from data-parallel ranks on cpu pods (a rank of tensor 2 over two pods)",
     lambda b: b.engine("sglang").kv_events(replayPort=5600).parallelism(tensor=2, data=2),
     "spec.engine.kvEvents", KV_RANKS_MSG),
    ("kv events from 3 ranks over 2 pods (not whole ranks a pod)",
     lambda b: b.engine("vllm").kv_events(replayPort=5600).accelerator("nvidia-h200", 3).parallelism(tensor=2, data=3),
     "spec.engine.kvEvents", KV_RANKS_MSG),
    ("kv rank ports over vLLM's data-parallel RPC port",
     lambda b: b.engine("vllm").kv_events(port=13340, replayPort=13400).accelerator("nvidia-h200", 8)
     .parallelism(tensor=2, data=8), "spec.engine.kvEvents", KV_PORTS_MSG),
    ("kv rank 1's publisher on the replay port (vllm offsets both by the rank)",
     lambda b: b.engine("vllm").kv_events().accelerator("nvidia-h200", 8).parallelism(tensor=4, data=2),
     "spec.engine.kvEvents", KV_PORTS_MSG),
    ("kv rank 3's replay port on the http port",
     lambda b: b.engine("sglang").kv_events(port=7000, replayPort=7997).accelerator("nvidia-h200", 8)
     .parallelism(tensor=2, data=4), "spec.engine.kvEvents", KV_PORTS_MSG),
    ("kv rank ports past 65535",
     lambda b: b.engine("vllm").kv_events(port=65530, replayPort=65520).accelerator("nvidia-h200", 8)
     .parallelism(tensor=1, data=8), "spec.engine.kvEvents", KV_PORTS_MSG),
    ("kv events topic with a space", lambda b: b.engine("vllm").kv_events(topic="a b"),
     "spec.engine.kvEvents.topic", None),
    ("kv events from a mindie pool", lambda b: b.pool("a", engine={"type": "mindie", "kvEvents": {}}),
     "spec.pools", "pools: engine.kvEvents: mindie publishes no KV events (builtin, vllm and sglang do) (in every "
     "pool, with the fields it inherits)"),
    ("revision on an s3 source", lambda b: b.model("m", source="s3://bucket/v4").set("spec.model.revision", "v1"),
     "spec.model.revision",
     "model.revision pins hf:// sources only (for s3:// or pvc:// put the version in the path)"),
]


@pytest.mark.parametrize(("case", "mutate", "path", "message"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_refused_by_server_checks_and_pydantic(
    case: str, mutate: Mutation, path: str, message: str | None
) -> None:
    obj = mutate(make_md("bad")).dict()
    server = server_errors(obj)
    local = _pydantic_errors(obj)
    assert server, f"{case}: the API server checks accepted it"
    assert local, f"{case}: pydantic accepted it"
    assert path in [p for p, _ in server], server
    assert path in [p for p, _ in local], local
    if message is not None:
        assert (path, message) in server
        assert local == [(path, message)]


def test_a_good_baseline_passes_so_each_bad_case_breaks_one_thing() -> None:
    assert server_errors(make_md("good").dict()) == []
    assert _pydantic_errors(make_md("good").dict()) == []


def test_kv_events_accepted_where_engines_publish_them() -> None:
    for md in (make_md("kv").engine("vllm").kv_events(), make_md("kv").engine("builtin").kv_events(topic=""),
               make_md("kv").engine("sglang").kv_events(port=7000, replayPort=7001, bufferSteps=5),
               make_md("kv").engine("builtin").kv_events().accelerator("nvidia-h200", 8).parallelism(tensor=8, data=2),
               # one pod, every rank's ports apart from the others (ranks 0..7 on 5557..5564, replays from 5600)
               make_md("kv").engine("vllm").kv_events(replayPort=5600).accelerator("nvidia-h200", 8)
               .parallelism(data=8, expert=8),
               make_md("kv").engine("sglang").kv_events(port=5600, replayPort=5557).accelerator("nvidia-h200", 8)
               .parallelism(tensor=2, data=4),
               # ranks spread over pods: DP 2 over two pods, DP 16 over four pods (four ranks each)
               make_md("kv").engine("vllm").kv_events(replayPort=5600).accelerator("nvidia-h200", 8)
               .parallelism(tensor=8, data=2),
               make_md("kv").engine("sglang").kv_events(replayPort=5600).accelerator("nvidia-h200", 8)
               .parallelism(tensor=2, data=16),
               make_md("kv").engine("vllm").kv_events(replayPort=5600).parallelism(tensor=1, data=2),  # cpu pods
               make_md("kv").engine("mindie").pool("a", engine={"type": "vllm", "kvEvents": {}})):
        assert server_errors(md.dict()) == [] and _pydantic_errors(md.dict()) == []


# Random specs within the schema's bounds: the CEL rule and its Python twin must agree on each.
_specs = st.fixed_dictionaries(
    {
        "model": st.fixed_dictionaries({"name": st.sampled_from(["m", "a"]), "source": st.just("builtin://x"),
                                        "aliases": st.lists(st.sampled_from(["a", "b", "m"]), max_size=3)}),
        "accelerator": st.fixed_dictionaries({"type": st.sampled_from([t.value for t in AcceleratorType]),
                                              "devicesPerPod": st.integers(0, 16)}),
        "parallelism": st.fixed_dictionaries({k: st.integers(1, 8) for k in ("tensor", "pipeline", "data",
                                                                              "expert")}),
        "engine": st.fixed_dictionaries({"type": st.sampled_from(["builtin", "vllm", "sglang", "mindie"]),
                                         "port": st.sampled_from([8000, 5557, 29500])},
                                        optional={"kvEvents": st.fixed_dictionaries(
                                            {}, optional={"port": st.sampled_from([5557, 8000, 29500]),
                                                          "replayPort": st.sampled_from([5557, 5558])})}),
        "replicas": st.integers(0, 6),
        "modes": st.lists(st.sampled_from(["non-think", "think-high", "think-max"]), min_size=1, max_size=3),
        "rollout": st.fixed_dictionaries({"maxSurge": st.integers(0, 2), "maxUnavailable": st.integers(0, 2)}),
        "recovery": st.fixed_dictionaries({"backoffSeconds": st.integers(1, 20),
                                           "maxBackoffSeconds": st.integers(1, 20)}),
    },
    optional={"autoscaling": st.fixed_dictionaries({"minReplicas": st.integers(0, 5),
                                                    "maxReplicas": st.integers(1, 5)}),
              "pools": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["a", "b"])}, optional={
                  "accelerator": st.fixed_dictionaries({"type": st.sampled_from([t.value for t in AcceleratorType]),
                                                        "devicesPerPod": st.integers(0, 16)}),
                  "parallelism": st.fixed_dictionaries({k: st.integers(1, 8) for k in ("tensor", "pipeline",
                                                                                        "data", "expert")}),
                  "minReplicas": st.integers(0, 3), "maxReplicas": st.integers(0, 3)}),
                  max_size=3)},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs)
def test_cel_and_python_rules_agree(spec: dict[str, Any]) -> None:
    spec_schema = crd_schema()["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, spec)
    cel = {message: ok for _, message, ok in cel_results(spec_schema, defaulted)}
    for rule in rules.RULES:
        assert cel[rule.message] == rule.check(defaulted), rule.name
    obj = {"metadata": {"name": "x"}, "spec": spec}
    assert bool(_pydantic_errors(obj)) == (not all(cel.values()))
