"""Builders: golden manifests per engine type x accelerator, plus the properties every manifest keeps.

Regenerate goldens with `SUPERNODE_UPDATE_GOLDEN=1 pytest tests/operator/test_operator_builders.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import MDBuilder, make_plan, operator_md

from supernode.api import constants as C
from supernode.operator import builders, naming

GOLDEN = Path(__file__).parent / "golden"


def base_md() -> MDBuilder:
    return operator_md().uid()

CASES: dict[str, tuple[Any, bool, list[list[str]], list[str | None], str | None]] = {
    "builtin-cpu-sts": (base_md().engine("builtin").accelerator("cpu").parallelism(tensor=2)
                        .source("builtin://tiny"), False, [["cpu-a", "cpu-b"]], [None], None),
    "builtin-ascend-lws": (base_md().engine("builtin").accelerator("ascend-910c", 16)
                           .parallelism(tensor=16, data=2, expert=32), True, [["a3-0", "a3-1"]], ["sp-1"],
                           C.RESOURCE_ASCEND),
    "vllm-ascend-sts": (base_md().engine("vllm").accelerator("ascend-910c", 16)
                        .parallelism(tensor=16, data=2, expert=32).model("deepseek-v4-flash", "deepseek-chat"),
                        False, [["a3-0", "a3-1"]], ["sp-1"], C.RESOURCE_ASCEND),
    "vllm-nvidia-dp-lws": (base_md().engine("vllm").accelerator("nvidia-h200", 8)
                           .parallelism(tensor=1, data=16, expert=16).source("hf://deepseek-ai/DeepSeek-V4-Flash"),
                           True, [["h200-0", "h200-1"]], ["clique-a"], C.RESOURCE_NVIDIA),
    "vllm-nvidia-single-sts": (base_md().engine("vllm").accelerator("nvidia-b200", 8)
                               .parallelism(data=8, expert=8), False, [["b200-0"]], [None], C.RESOURCE_NVIDIA),
    "sglang-nvidia-lws": (base_md().engine("sglang").accelerator("nvidia-h200", 8)
                          .parallelism(tensor=16, expert=16).source("s3://weights/v4-flash"), True,
                          [["h200-0", "h200-1"]], ["clique-b"], C.RESOURCE_NVIDIA),
    "sglang-ascend-sts": (base_md().engine("sglang").accelerator("ascend-910b", 8)
                          .parallelism(tensor=8, pipeline=2), False, [["a2-0", "a2-1"]], ["sp-2"],
                          C.RESOURCE_ASCEND),
    # KV events (spec.engine.kvEvents): each engine's own flags, the named ports discovery reads.
    "builtin-cpu-kv-events-sts": (base_md().engine("builtin").kv_events(topic="v4").accelerator("cpu")
                                  .source("builtin://tiny"), False, [["cpu-a"]], [None], None),
    "vllm-nvidia-kv-events-lws": (base_md().engine("vllm").kv_events(port=6557, replayPort=6558)
                                  .accelerator("nvidia-h200", 8).parallelism(tensor=16, expert=16),
                                  True, [["h200-0", "h200-1"]], ["clique-a"], C.RESOURCE_NVIDIA),
    "sglang-nvidia-kv-events-sts": (base_md().engine("sglang").kv_events(bufferSteps=2000)
                                    .accelerator("nvidia-h200", 8).parallelism(tensor=8), False, [["h200-0"]],
                                    [None], C.RESOURCE_NVIDIA),
    # One publisher per data-parallel rank (vLLM offsets both ports by the rank): a named port per rank.
    "vllm-nvidia-dp-kv-events-sts": (base_md().engine("vllm").kv_events(port=5557, replayPort=5600)
                                     .accelerator("nvidia-h200", 8).parallelism(data=8, expert=8), False,
                                     [["h200-0"]], [None], C.RESOURCE_NVIDIA),
    # Ranks spread over pods (DP 4, two ranks a pod): every pod names every rank's ports (one template) and
    # says how many ranks it runs, so discovery maps rank r to pod r // 2.
    "vllm-nvidia-dp-kv-events-pods-lws": (base_md().engine("vllm").kv_events(port=5557, replayPort=5600)
                                          .accelerator("nvidia-h200", 8).parallelism(tensor=4, data=4, expert=16),
                                          True, [["h200-0", "h200-1"]], ["clique-a"], C.RESOURCE_NVIDIA),
    "sglang-nvidia-dp-kv-events-pods-sts": (base_md().engine("sglang").kv_events(port=5557, replayPort=5600)
                                            .accelerator("nvidia-h200", 8).parallelism(tensor=4, data=4, expert=16),
                                            False, [["h200-0", "h200-1"]], [None], C.RESOURCE_NVIDIA),
    "mindie-ascend-sts": (base_md().engine("mindie")
                          .accelerator("ascend-910b", 8, resource_name="huawei.com/ascend-1980")
                          .parallelism(tensor=16), False, [["a2-0", "a2-1"]], [None], C.RESOURCE_ASCEND),
}


def render(case: str) -> list[dict[str, Any]]:
    builder, lws, nodes, sns, resource = CASES[case]
    md = builder.obj()
    plan = make_plan(md, nodes, sns, resource)
    return builders.desired_objects(md, plan, naming.revision(md), lws=lws)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_manifests(case: str) -> None:
    text = yaml.safe_dump_all(render(case), sort_keys=True)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("SUPERNODE_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden {path}; run with SUPERNODE_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{case} differs from {path} (SUPERNODE_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_is_owned_and_labelled(case: str) -> None:
    for obj in render(case):
        meta = obj["metadata"]
        assert meta["ownerReferences"] == [{"apiVersion": C.API_VERSION, "kind": C.KIND, "name": "v4-flash",
                                            "uid": "uid-v4-flash", "controller": True, "blockOwnerDeletion": True}]
        assert meta["labels"][C.LABEL_DEPLOYMENT] == "v4-flash"
        assert meta["namespace"] == "llm"


def _workload(case: str) -> dict[str, Any]:
    return render(case)[1]


def _templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "StatefulSet":
        return [obj["spec"]["template"]]
    lwt = obj["spec"]["leaderWorkerTemplate"]
    return [lwt["leaderTemplate"], lwt["workerTemplate"]]


def test_lws_group_recreates_on_pod_restart_with_group_size() -> None:
    lws = _workload("vllm-nvidia-dp-lws")
    assert lws["kind"] == "LeaderWorkerSet"
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader, worker = _templates(lws)
    assert leader["metadata"]["labels"][C.LABEL_ROLE] == C.ROLE_LEADER
    assert worker["metadata"]["labels"][C.LABEL_ROLE] == C.ROLE_WORKER
    assert "readinessProbe" in leader["spec"]["containers"][0]
    assert "readinessProbe" not in worker["spec"]["containers"][0]


def test_statefulset_group_has_parallel_pods_and_headless_service() -> None:
    objs = render("vllm-ascend-sts")
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Service", "StatefulSet", "Service", "PodDisruptionBudget"]
    sts, headless, pdb = objs[1:]
    assert sts["spec"]["podManagementPolicy"] == "Parallel" and sts["spec"]["replicas"] == 2
    assert headless["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert pdb["spec"]["minAvailable"] == 2


def test_binding_becomes_required_node_affinity() -> None:
    (template,) = _templates(_workload("vllm-ascend-sts"))
    terms = template["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    exprs = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": C.NODE_LABEL_HOSTNAME, "operator": "In", "values": ["a3-0", "a3-1"]} in exprs
    assert {"key": C.NODE_LABEL_ASCEND_SUPERPOD, "operator": "In", "values": ["sp-1"]} in exprs


def test_accelerator_resources_and_override() -> None:
    c = _templates(_workload("vllm-ascend-sts"))[0]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {C.RESOURCE_ASCEND: "16"}
    c = _templates(_workload("mindie-ascend-sts"))[0]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"huawei.com/ascend-1980": "8"}
    c = _templates(_workload("builtin-cpu-sts"))[0]["spec"]["containers"][0]
    assert C.RESOURCE_NVIDIA not in str(c["resources"]) and C.RESOURCE_ASCEND not in str(c["resources"])


def _env(case: str) -> dict[str, Any]:
    c = _templates(_workload(case))[0]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_vendor_env() -> None:
    env = _env("vllm-ascend-sts")
    assert env[C.ENV_HCCL_OP_EXPANSION_MODE] == "AIV" and env[C.ENV_HCCL_IF_IP] == "$(POD_IP)"
    assert C.ENV_NCCL_SOCKET_IFNAME in _env("sglang-nvidia-lws")
    assert _env("builtin-ascend-lws")[C.ENV_RANK] == "$(LWS_WORKER_INDEX)"


def test_vllm_flags_for_deepseek_v4() -> None:
    c = _templates(_workload("vllm-ascend-sts"))[0]["spec"]["containers"][0]
    args = c["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "16"
    assert args[args.index("--data-parallel-size") + 1] == "2"
    assert "--enable-expert-parallel" in args
    assert args[args.index("--reasoning-parser") + 1] == "deepseek_v4"
    assert "--headless" in c["command"][2]
    assert args[args.index("--served-model-name") + 2] == "deepseek-chat"


def test_sglang_multi_node_flags() -> None:
    args = _templates(_workload("sglang-nvidia-lws"))[0]["spec"]["containers"][0]["args"]
    for flag, value in (("--tp", "16"), ("--ep", "16"), ("--nnodes", "2"), ("--node-rank", "$(SUPERNODE_RANK)"),
                        ("--dist-init-addr", "$(SUPERNODE_LEADER_ADDR):29500")):
        assert args[args.index(flag) + 1] == value


def test_model_sources() -> None:
    pvc = _templates(_workload("vllm-ascend-sts"))[0]["spec"]
    assert pvc["volumes"][1]["persistentVolumeClaim"]["claimName"] == "model-cache"
    assert "initContainers" not in pvc
    hf = _templates(_workload("vllm-nvidia-dp-lws"))[0]["spec"]
    assert "snapshot_download('deepseek-ai/DeepSeek-V4-Flash'" in hf["initContainers"][0]["command"][2]
    s3 = _templates(_workload("sglang-nvidia-lws"))[0]["spec"]
    assert s3["initContainers"][0]["args"][:3] == ["s3", "sync", "s3://weights/v4-flash"]
    builtin = _templates(_workload("builtin-cpu-sts"))[0]["spec"]
    assert builtin["initContainers"][0]["command"][:3] == ["supernode", "engine", "init-checkpoint"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in builtin["containers"][0]["volumeMounts"]


def test_leader_service_and_router_annotations() -> None:
    svc = render("vllm-nvidia-dp-lws")[0]
    assert svc["spec"]["selector"] == {C.LABEL_DEPLOYMENT: "v4-flash", C.LABEL_ROLE: C.ROLE_LEADER}
    assert svc["metadata"]["annotations"][C.ANNOTATION_MODES] == "non-think,think-high,think-max"
    assert svc["metadata"]["annotations"][C.ANNOTATION_ENGINE_TYPE] == "vllm"


def test_revision_ignores_replicas_but_not_image() -> None:
    a = base_md().replicas(1).obj()
    b = base_md().replicas(5).obj()
    c = base_md().engine("builtin", image="x:2").obj()
    assert naming.revision(a) == naming.revision(b) != naming.revision(c)


def test_unplaced_groups_render_nothing() -> None:
    md = base_md().replicas(3).obj()
    plan = make_plan(md, [["n0"]], [None], unplaced=2)
    objs = builders.desired_objects(md, plan, "r1", lws=False)
    assert sorted({o["metadata"]["labels"].get(C.LABEL_GROUP, "-") for o in objs}) == ["-", "0"]


def test_every_engine_and_accelerator_has_a_pinned_default_image() -> None:
    from types import SimpleNamespace

    from supernode.api.models import AcceleratorType, EngineType
    from supernode.operator.engines import image_for

    def image(engine: EngineType, acc: AcceleratorType) -> str:  # every pair, valid spec or not
        spec = SimpleNamespace(engine=SimpleNamespace(image=None, type=engine), accelerator=SimpleNamespace(type=acc))
        return image_for(SimpleNamespace(spec=spec))  # type: ignore[arg-type]

    for engine in EngineType:
        for acc in AcceleratorType:
            assert ":" in image(engine, acc).rsplit("/", 1)[-1], f"{engine}/{acc}: {image(engine, acc)} has no tag"
    builtin = {acc.vendor: image(EngineType.BUILTIN, acc) for acc in AcceleratorType}
    assert builtin == {"cpu": "ghcr.io/supernode-io/supernode-engine-cpu:0.1.0",
                       "nvidia": "ghcr.io/supernode-io/supernode-engine-cuda:0.1.0",
                       "ascend": "ghcr.io/supernode-io/supernode-engine-ascend:0.1.0"}
    assert image_for(base_md().engine("builtin", image="mine:1").obj()) == "mine:1"
