"""The engine container of one replica-group pod, per engine type (pure).

Every pod of a group runs the same container; its node rank and the leader's address arrive through
env (`$(SUPERNODE_RANK)`, `$(SUPERNODE_LEADER_ADDR)`, expanded by the kubelet in command/args), so
one template serves a StatefulSet (rank = pod index) and a LeaderWorkerSet (rank = worker index).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supernode.api import constants as C
from supernode.api.models import EngineType, Mode, ModelDeployment
from supernode.api.pools import pool_name
from supernode.operator.group_secrets import GroupKeys, secret_env
from supernode.operator.ranktable import RANK_TABLE_PATH

MODEL_DIR = "/models"
RENDEZVOUS_PORT = C.RENDEZVOUS_PORT  # torch.distributed / vLLM / SGLang rendezvous on the leader
DP_RPC_PORT = C.DP_RPC_PORT  # vLLM data-parallel RPC port on the leader

# The built-in engine's images are what docker/engine-{cpu,cuda,ascend}.Dockerfile build, in the registry
# and at the version the Helm chart uses for the control plane (tests/helm/test_helm_dockerfiles.py
# holds the Dockerfiles' `docker build -t`, the chart's appVersion and pyproject's version to these).
IMAGE_REGISTRY = "ghcr.io/supernode-io"
IMAGE_TAG = "0.1.0"
BUILTIN_ENGINE_IMAGES: dict[str, str] = {  # accelerator vendor -> image name (docker/<name minus supernode->)
    "cpu": "supernode-engine-cpu",
    "nvidia": "supernode-engine-cuda",
    "ascend": "supernode-engine-ascend",
}
# One place for every engine's default image (spec.engine.image overrides it), keyed (engine, vendor);
# "any" is the fallback for vendors without an entry.
DEFAULT_IMAGES: dict[tuple[str, str], str] = {
    **{("builtin", vendor): f"{IMAGE_REGISTRY}/{name}:{IMAGE_TAG}" for vendor, name in BUILTIN_ENGINE_IMAGES.items()},
    ("vllm", "nvidia"): "vllm/vllm-openai:v0.11.0",
    ("vllm", "ascend"): "quay.io/ascend/vllm-ascend:v0.11.0rc0",
    ("vllm", "cpu"): "vllm/vllm-openai:v0.11.0",
    ("sglang", "any"): "lmsysorg/sglang:latest",
    ("mindie", "any"): "swr.cn-south-1.myhuaweicloud.com/ascendhub/mindie:2.1.RC1-800I-A3-py311-openeuler24.03-lts",
}


@dataclass(frozen=True, slots=True)
class GroupContext:
    """What a pod needs to know about its group, as strings the kubelet expands."""

    index: int
    pods: int  # node ranks in the group
    leader_addr: str  # e.g. "$(LWS_LEADER_ADDRESS)" or the leader's headless DNS name
    rank_env: dict[str, Any]  # env entry (minus name) giving the node rank
    supernode: str | None = None
    secret_name: str | None = None  # the group Secret (group_secrets.py), when the operator renders one
    keys: GroupKeys | None = None  # which keys that Secret holds


def image_for(md: ModelDeployment) -> str:
    if md.spec.engine.image:
        return md.spec.engine.image
    engine, vendor = md.spec.engine.type.value, md.spec.accelerator.type.vendor
    image = DEFAULT_IMAGES.get((engine, vendor)) or DEFAULT_IMAGES.get((engine, "any"))
    if image is None:  # unreachable for the validated engine/vendor enums; say what is missing if not
        raise ValueError(f"spec.engine.image: no default image for engine {engine} on {vendor}; set one")
    return image


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def base_env(md: ModelDeployment, ctx: GroupContext) -> list[dict[str, Any]]:
    spec, par = md.spec, md.spec.parallelism
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": C.ENV_RANK, **ctx.rank_env},
        _env(C.ENV_WORLD_SIZE, str(ctx.pods)),
        _env(C.ENV_LEADER_ADDR, ctx.leader_addr),
        _env(C.ENV_LEADER_PORT, str(RENDEZVOUS_PORT)),
        _env(C.ENV_DEVICES_PER_POD, str(spec.accelerator.devices_per_pod)),
        _env(C.ENV_TENSOR_PARALLEL, str(par.tensor)),
        _env(C.ENV_EXPERT_PARALLEL, str(par.expert)),
        _env(C.ENV_PIPELINE_PARALLEL, str(par.pipeline)),
        _env(C.ENV_DATA_PARALLEL, str(par.data)),
        _env(C.ENV_DEPLOYMENT, md.metadata.name),
        _env(C.ENV_GROUP, str(ctx.index)),
        _env(C.ENV_MODEL_NAME, spec.model.name),
        _env(C.ENV_MODEL_DIR, MODEL_DIR),
        _env(C.ENV_DEVICE, spec.accelerator.type.device),
        _env(C.ENV_HTTP_PORT, str(spec.engine.port)),
    ]
    if ctx.supernode:
        env.append(_env(C.ENV_SUPERNODE_ID, ctx.supernode))
    if pool := pool_name(md):
        env.append(_env(C.ENV_POOL, pool))
    if spec.engine.type == EngineType.BUILTIN:  # the group store listens on this pod's IP only
        env.append(_env(C.ENV_GROUP_BIND_ADDR, "$(POD_IP)"))
    if ctx.secret_name and ctx.keys:
        env += secret_env(ctx.secret_name, spec.engine.type.value, ctx.keys)
    vendor = spec.accelerator.type.vendor
    if vendor == "ascend":
        env += [_env(C.ENV_HCCL_IF_IP, "$(POD_IP)"), _env(C.ENV_HCCL_SOCKET_IFNAME, "eth0"),
                _env(C.ENV_GLOO_SOCKET_IFNAME, "eth0"), _env(C.ENV_HCCL_BUFFSIZE, "1024")]
        if spec.accelerator.type.value in ("ascend-910c", "ascend-950"):  # A3 / SuperPoD generations
            env.append(_env(C.ENV_HCCL_OP_EXPANSION_MODE, "AIV"))
    elif vendor == "nvidia":
        env += [_env(C.ENV_NCCL_SOCKET_IFNAME, "eth0"), _env(C.ENV_GLOO_SOCKET_IFNAME, "eth0")]
    else:
        env.append(_env(C.ENV_GLOO_SOCKET_IFNAME, "eth0"))
    overrides = dict(spec.engine.env)
    env = [e for e in env if e["name"] not in overrides]
    env += [_env(k, v) for k, v in sorted(overrides.items())]
    return env


def _served_names(md: ModelDeployment) -> list[str]:
    return [md.spec.model.name, *md.spec.model.aliases]


def _is_deepseek_v4(md: ModelDeployment) -> bool:
    text = f"{md.spec.model.name} {md.spec.model.source}".lower()
    return "deepseek-v4" in text or "deepseek_v4" in text


def _builtin(md: ModelDeployment, ctx: GroupContext) -> tuple[list[str], list[str]]:
    # Everything else comes from the SUPERNODE_* env; the bind address must reach other pods.
    return ["supernode", "engine", "serve"], ["--host", "0.0.0.0"]


def _vllm(md: ModelDeployment, ctx: GroupContext) -> tuple[list[str], list[str]]:
    spec, par = md.spec, md.spec.parallelism
    rank = f"$({C.ENV_RANK})"
    shell_extra = ""
    args = [MODEL_DIR, "--served-model-name", *_served_names(md), "--host", "0.0.0.0",
            "--port", str(spec.engine.port), "--tensor-parallel-size", str(par.tensor)]
    if par.pipeline > 1:
        args += ["--pipeline-parallel-size", str(par.pipeline)]
    if par.data > 1:
        args += ["--data-parallel-size", str(par.data)]
    if par.expert > 1:
        args.append("--enable-expert-parallel")
    if ctx.pods > 1:
        per_dp_rank = par.tensor * par.pipeline
        devices = max(1, spec.accelerator.devices_per_pod)
        if par.data > 1 and per_dp_rank <= devices and par.data % ctx.pods == 0:
            # Whole DP ranks per pod: vLLM's Ray-free multi-node data parallel (workers headless).
            local = par.data // ctx.pods
            shell_extra = f"--data-parallel-start-rank $$(({local} * ${C.ENV_RANK}))"
            args += ["--data-parallel-size-local", str(local),
                     "--data-parallel-address", f"$({C.ENV_LEADER_ADDR})", "--data-parallel-rpc-port",
                     str(DP_RPC_PORT)]
        else:
            # One TP/PP world spans pods: multiprocessing multi-node (no Ray).
            args += ["--nnodes", str(ctx.pods), "--node-rank", rank, "--master-addr",
                     f"$({C.ENV_LEADER_ADDR})", "--master-port", str(RENDEZVOUS_PORT)]
    if _is_deepseek_v4(md):
        args += ["--reasoning-parser", "deepseek_v4"]
        if Mode.THINK_MAX in spec.modes:
            args += ["--max-model-len", "393216"]
    args += ["--trust-remote-code"]
    return ["/bin/sh", "-c", _leader_or_headless("vllm serve", ctx, shell_extra)], args


def _leader_or_headless(cmd: str, ctx: GroupContext, extra: str) -> str:
    """Workers (rank > 0) of a multi-node vLLM group run `--headless` (no API server)."""
    run = f'exec {cmd} "$@"' + (f" {extra}" if extra else "")
    if ctx.pods == 1:
        return run
    return f'if [ "${C.ENV_RANK}" = "0" ]; then {run}; else {run} --headless; fi'


def _sglang(md: ModelDeployment, ctx: GroupContext) -> tuple[list[str], list[str]]:
    spec, par = md.spec, md.spec.parallelism
    # With DP attention SGLang's --tp is the whole world and --dp splits it into attention ranks
    # (e.g. 8 GPUs: --tp 8 --dp 8 --enable-dp-attention).
    args = ["--model-path", MODEL_DIR, "--served-model-name", spec.model.name, "--host", "0.0.0.0",
            "--port", str(spec.engine.port), "--tp", str(par.tensor * par.pipeline * par.data)]
    if par.data > 1:
        args += ["--dp", str(par.data), "--enable-dp-attention"]
    if par.expert > 1:
        args += ["--ep", str(par.expert)]
    if ctx.pods > 1:
        args += ["--nnodes", str(ctx.pods), "--node-rank", f"$({C.ENV_RANK})",
                 "--dist-init-addr", f"$({C.ENV_LEADER_ADDR}):{RENDEZVOUS_PORT}"]
    if md.spec.accelerator.type.vendor == "ascend":
        args += ["--device", "npu", "--attention-backend", "ascend"]
    args += ["--trust-remote-code"]
    return ["python3", "-m", "sglang.launch_server"], args


def _mindie(md: ModelDeployment, ctx: GroupContext) -> tuple[list[str], list[str]]:
    # MindIE Service reads its multi-node setup from env (MIES_CONTAINER_IP, RANKTABLEFILE) and
    # config.json (multiNodesInferEnabled); the rank table is the operator's (ranktable_objects.py).
    return ["/bin/sh", "-c", "exec /usr/local/Ascend/mindie/latest/mindie-service/bin/mindieservice_daemon"], []


def mindie_env(md: ModelDeployment, ctx: GroupContext) -> list[dict[str, Any]]:
    env = [_env("MIES_CONTAINER_IP", "$(POD_IP)"), _env("MIES_CONFIG_JSON_PATH", f"{MODEL_DIR}/mindie-config.json")]
    if ctx.pods > 1:
        env += [_env("RANKTABLEFILE", RANK_TABLE_PATH), _env("WORLD_SIZE", str(
            ctx.pods * max(1, md.spec.accelerator.devices_per_pod)))]
    return env


def kv_events_args(md: ModelDeployment) -> list[str]:
    """The flags that make the leader publish KV events on spec.engine.kvEvents' ports (none when unset).

    Every engine binds its PUB and replay sockets on all interfaces (``tcp://*:PORT``, which vLLM and
    SGLang bind rather than connect); the router connects to the leader pod's IP on the named ports."""
    kv = md.spec.engine.kv_events
    if kv is None:
        return []
    pub, replay = f"tcp://*:{kv.port}", f"tcp://*:{kv.replay_port}"
    engine = md.spec.engine.type
    if engine == EngineType.BUILTIN:
        return ["--kv-events-endpoint", pub, "--kv-events-replay-endpoint", replay, "--kv-events-topic", kv.topic,
                "--kv-events-buffer-steps", str(kv.buffer_steps)]
    config: dict[str, Any] = {"publisher": "zmq", "endpoint": pub, "replay_endpoint": replay, "topic": kv.topic,
                              "buffer_steps": kv.buffer_steps}
    if engine == EngineType.VLLM:
        config["enable_kv_cache_events"] = True  # vLLM publishes nothing without it, whatever the publisher
    elif engine != EngineType.SGLANG:  # the CRD refuses it (rules "kv-events-engine"); say so if not
        raise ValueError(f"spec.engine.kvEvents: engine {engine.value} publishes no KV events")
    return ["--kv-events-config", json.dumps(config, sort_keys=True, separators=(",", ":"))]


def kv_event_ranks(md: ModelDeployment) -> int:
    """Publishers of one group: vLLM and SGLang open one per data-parallel rank, rank r on the configured
    PUB and replay ports plus r (their ``offset_endpoint_port``); the built-in engine publishes once."""
    return 1 if md.spec.engine.type == EngineType.BUILTIN else md.spec.parallelism.data


def kv_events_ports(md: ModelDeployment) -> list[dict[str, Any]]:
    """Named container ports of the KV event sockets (what router discovery looks for): rank 0's keep the
    plain names, rank r's carry ``-r`` (C.kv_port_name). The pods of a group share one template, so each
    names every rank's ports; a pod binds only those of the ranks it runs (C.ANNOTATION_DP_LOCAL)."""
    kv = md.spec.engine.kv_events
    if kv is None:
        return []
    ranks = range(kv_event_ranks(md))
    return [*({"name": C.kv_port_name(C.PORT_KV_EVENTS, r), "containerPort": kv.port + r, "protocol": "TCP"}
              for r in ranks),
            *({"name": C.kv_port_name(C.PORT_KV_REPLAY, r), "containerPort": kv.replay_port + r, "protocol": "TCP"}
              for r in ranks)]


COMMANDS: dict[EngineType, Callable[[ModelDeployment, GroupContext], tuple[list[str], list[str]]]] = {
    EngineType.BUILTIN: _builtin,
    EngineType.VLLM: _vllm,
    EngineType.SGLANG: _sglang,
    EngineType.MINDIE: _mindie,
}


def engine_container(md: ModelDeployment, ctx: GroupContext) -> dict[str, Any]:
    spec = md.spec
    command, args = COMMANDS[spec.engine.type](md, ctx)
    if command[:2] == ["/bin/sh", "-c"] and args:
        command = [*command, "engine"]  # "$0" for sh -c; "$@" = args
    env = base_env(md, ctx)
    if spec.engine.type == EngineType.MINDIE:
        env += mindie_env(md, ctx)
    return {
        "name": "engine",
        "image": image_for(md),
        "command": command,
        "args": [*args, *kv_events_args(md), *spec.engine.args],
        "env": env,
        "ports": [{"name": C.PORT_HTTP, "containerPort": spec.engine.port, "protocol": "TCP"},
                  {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"},
                  *kv_events_ports(md)],
    }
