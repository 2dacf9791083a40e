"""Cross-field rules of a ModelDeployment spec, written once for both enforcement points.

Each rule carries a CEL expression (rendered into the CRD's `x-kubernetes-validations`, evaluated
by the API server with `self` = the spec) and a Python predicate over the same camelCase spec dict
(run by the pydantic models, so the CLI and the local runtime refuse exactly what the API server
refuses, with the same message). Tests evaluate both sides on the same objects so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from supernode.api import constants as C

Spec = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str  # short id, used in tests and docs
    cel: str  # CEL over `self` = spec (defaults applied)
    check: Callable[[Spec], bool]  # same predicate in Python over the camelCase spec dict
    message: str  # shown by the API server and by pydantic; names the field
    field_path: str  # JSONPath under spec that the API server reports (".parallelism.tensor")


def _get(spec: Spec, *path: str, default: Any = None) -> Any:
    node: Any = spec
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def _world(spec: Spec) -> int:
    p = _get(spec, "parallelism", default={}) or {}
    return int(p.get("tensor", 1)) * int(p.get("pipeline", 1)) * int(p.get("data", 1))


def _per_pod(spec: Spec) -> int:
    return int(_get(spec, "accelerator", "devicesPerPod", default=0))


def _acc_type(spec: Spec) -> str:
    return str(_get(spec, "accelerator", "type", default=""))


def _autoscaling_ok(spec: Spec, check: Callable[[Mapping[str, Any]], bool]) -> bool:
    auto = spec.get("autoscaling")
    return auto is None or check(auto)


_WORLD_CEL = "self.parallelism.tensor * self.parallelism.pipeline * self.parallelism.data"

# The shape rules below hold for the top-level spec and for every pool with the fields it inherits.
_SHAPE_RULES = ("cpu-no-devices", "devices-required", "world-multiple-of-devices", "expert-divides-world",
                "kv-events-engine", "kv-events-ports", "kv-events-ranks-per-pod")
_POOL_FIELDS = ("accelerator", "parallelism", "engine")  # the fields the shape rules read


def _pool_spec(spec: Spec, pool: Mapping[str, Any]) -> dict[str, Any]:
    return {**spec, **{k: pool[k] for k in _POOL_FIELDS if k in pool}}


def _pool_cel(cel: str) -> str:
    for key in _POOL_FIELDS:
        cel = cel.replace(f"self.{key}", f"(has(p.{key}) ? p.{key} : self.{key})")
    return f"!has(self.pools) || self.pools.all(p, {cel})"


def _for_pools(rule: Rule) -> Rule:
    """`rule` applied to each pool (a field the pool leaves out is the top-level one)."""
    return Rule(
        name=f"pools-{rule.name}", cel=_pool_cel(rule.cel),
        check=lambda s: all(rule.check(_pool_spec(s, p)) for p in s.get("pools") or []),
        message=f"pools: {rule.message} (in every pool, with the fields it inherits)", field_path=".pools",
    )


RENDEZVOUS_PORT = C.RENDEZVOUS_PORT  # the engines' rendezvous port on the leader
DP_RPC_PORT = C.DP_RPC_PORT  # vLLM's data-parallel RPC port on the leader


def _kv(spec: Spec) -> Mapping[str, Any] | None:
    kv = _get(spec, "engine", "kvEvents")
    return kv if isinstance(kv, Mapping) else None


def _kv_ranks(spec: Spec) -> int:
    """Publishers of one group: vLLM and SGLang open one per data-parallel rank, each on the configured
    ports plus its rank (both the PUB and the replay socket); the built-in engine publishes once."""
    if _get(spec, "engine", "type", default="builtin") == "builtin":
        return 1
    return int(_get(spec, "parallelism", "data", default=1))


def _kv_ports_ok(spec: Spec) -> bool:
    kv = _kv(spec)
    if kv is None:
        return True
    n = _kv_ranks(spec)
    port, replay = int(kv.get("port", 5557)), int(kv.get("replayPort", 5558))
    taken = (int(_get(spec, "engine", "port", default=8000)), RENDEZVOUS_PORT, DP_RPC_PORT)
    return ((port + n <= replay or replay + n <= port) and max(port, replay) + n <= 65536
            and all(not (port <= t < port + n or replay <= t < replay + n) for t in taken))


def _pods(spec: Spec) -> int:
    """Pods of one group (models.Spec.pods_per_group): one per device on cpu."""
    return _world(spec) if _per_pod(spec) == 0 else max(1, _world(spec) // _per_pod(spec))


def _whole_ranks_per_pod(spec: Spec) -> bool:
    """Each pod of the group runs whole data-parallel ranks, the same number on every pod (rank r on pod
    r // (data / pods)), so each rank's publisher has one pod to live on."""
    data = int(_get(spec, "parallelism", "data", default=1))
    return _get(spec, "engine", "type", default="builtin") == "builtin" or data == 1 or data % _pods(spec) == 0


_KV_CEL = "!has(self.engine.kvEvents) || "
_KV_N = "(self.engine.type == 'builtin' ? 1 : self.parallelism.data)"  # publishers (see _kv_ranks)
_KV_PUB, _KV_REPLAY = "self.engine.kvEvents.port", "self.engine.kvEvents.replayPort"
_PODS_CEL = (f"(self.accelerator.devicesPerPod == 0 ? {_WORLD_CEL} : ({_WORLD_CEL}) / self.accelerator.devicesPerPod "
             f"> 1 ? ({_WORLD_CEL}) / self.accelerator.devicesPerPod : 1)")  # see _pods


def _outside(port: str, start: str) -> str:
    return f"({port} < {start} || {port} >= {start} + {_KV_N})"


_KV_PORTS_CEL = _KV_CEL + " && ".join([
    f"({_KV_PUB} + {_KV_N} <= {_KV_REPLAY} || {_KV_REPLAY} + {_KV_N} <= {_KV_PUB})",
    f"({_KV_PUB} > {_KV_REPLAY} ? {_KV_PUB} : {_KV_REPLAY}) + {_KV_N} <= 65536",
    *(_outside(taken, start) for taken in ("self.engine.port", str(RENDEZVOUS_PORT), str(DP_RPC_PORT))
      for start in (_KV_PUB, _KV_REPLAY)),
])

_BASE_RULES: tuple[Rule, ...] = (
    Rule(
        name="cpu-no-devices",
        cel="self.accelerator.type != 'cpu' || self.accelerator.devicesPerPod == 0",
        check=lambda s: _acc_type(s) != "cpu" or _per_pod(s) == 0,
        message="accelerator.devicesPerPod must be 0 when accelerator.type is cpu",
        field_path=".accelerator.devicesPerPod",
    ),
    Rule(
        name="devices-required",
        cel="self.accelerator.type == 'cpu' || self.accelerator.devicesPerPod >= 1",
        check=lambda s: _acc_type(s) == "cpu" or _per_pod(s) >= 1,
        message="accelerator.devicesPerPod must be at least 1 for accelerator types other than cpu",
        field_path=".accelerator.devicesPerPod",
    ),
    Rule(
        name="world-multiple-of-devices",
        cel=f"self.accelerator.devicesPerPod == 0 || ({_WORLD_CEL}) % self.accelerator.devicesPerPod == 0",
        check=lambda s: _per_pod(s) == 0 or _world(s) % _per_pod(s) == 0,
        message="parallelism: tensor x pipeline x data must be a multiple of accelerator.devicesPerPod",
        field_path=".parallelism",
    ),
    Rule(
        name="expert-divides-world",
        cel=f"({_WORLD_CEL}) % self.parallelism.expert == 0",
        check=lambda s: _world(s) % int(_get(s, "parallelism", "expert", default=1)) == 0,
        message="parallelism.expert must divide tensor x pipeline x data",
        field_path=".parallelism.expert",
    ),
    Rule(
        name="kv-events-engine",
        cel=_KV_CEL + "self.engine.type != 'mindie'",
        check=lambda s: _kv(s) is None or _get(s, "engine", "type", default="builtin") != "mindie",
        message="engine.kvEvents: mindie publishes no KV events (builtin, vllm and sglang do)",
        field_path=".engine.kvEvents",
    ),
    Rule(
        name="kv-events-ports",
        cel=_KV_PORTS_CEL,
        check=_kv_ports_ok,
        message=f"engine.kvEvents: the ports port..port+n-1 and replayPort..replayPort+n-1 (n = parallelism.data "
        f"for vllm and sglang, whose data-parallel ranks each publish on the ports plus their rank; 1 for builtin) "
        f"must not overlap, must end at 65535 at most and must not hold engine.port, {RENDEZVOUS_PORT} (the "
        f"rendezvous port) or {DP_RPC_PORT} (vLLM's data-parallel RPC port)",
        field_path=".engine.kvEvents",
    ),
    Rule(
        name="kv-events-ranks-per-pod",
        cel=_KV_CEL + f"self.engine.type == 'builtin' || self.parallelism.data == 1 || "
        f"self.parallelism.data % {_PODS_CEL} == 0",
        check=lambda s: _kv(s) is None or _whole_ranks_per_pod(s),
        message="engine.kvEvents with parallelism.data above 1 needs parallelism.data to be a multiple of the "
        "group's pods for vllm and sglang (each pod then runs whole data-parallel ranks and publishes them from "
        "its own address; the router maps every rank to the pod that runs it)",
        field_path=".engine.kvEvents",
    ),
    Rule(
        name="autoscaling-min-le-max",
        cel="!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
        check=lambda s: _autoscaling_ok(s, lambda a: a.get("minReplicas", 1) <= a.get("maxReplicas", 1)),
        message="autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        field_path=".autoscaling.minReplicas",
    ),
    Rule(
        name="replicas-within-autoscaling",  # with pools, spec.replicas is unused (each pool has its own)
        cel="!has(self.autoscaling) || (has(self.pools) && size(self.pools) > 0)"
        " || (self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas)",
        check=lambda s: bool(s.get("pools")) or _autoscaling_ok(
            s, lambda a: a.get("minReplicas", 1) <= s.get("replicas", 1) <= a.get("maxReplicas", 1)
        ),
        message="replicas must lie within autoscaling.minReplicas and autoscaling.maxReplicas",
        field_path=".replicas",
    ),
    Rule(
        name="autoscaling-down-window",
        cel="!has(self.autoscaling) || self.autoscaling.behavior.scaleDownStabilizationSeconds"
        " >= self.autoscaling.behavior.scaleUpStabilizationSeconds",
        check=lambda s: _autoscaling_ok(
            s, lambda a: int(_get(a, "behavior", "scaleDownStabilizationSeconds", default=300))
            >= int(_get(a, "behavior", "scaleUpStabilizationSeconds", default=30))),
        message="autoscaling.behavior.scaleDownStabilizationSeconds must not be shorter than "
        "autoscaling.behavior.scaleUpStabilizationSeconds",
        field_path=".autoscaling.behavior.scaleDownStabilizationSeconds",
    ),
    Rule(
        name="autoscaling-ready-timeout",
        cel="!has(self.autoscaling) || self.autoscaling.behavior.readyTimeoutSeconds"
        " > self.autoscaling.behavior.coldStartSeconds",
        check=lambda s: _autoscaling_ok(
            s, lambda a: int(_get(a, "behavior", "readyTimeoutSeconds", default=1800))
            > int(_get(a, "behavior", "coldStartSeconds", default=300))),
        message="autoscaling.behavior.readyTimeoutSeconds must be longer than "
        "autoscaling.behavior.coldStartSeconds (the pending guard would give up before a group can start)",
        field_path=".autoscaling.behavior.readyTimeoutSeconds",
    ),
    Rule(
        name="autoscaling-zero-needs-builtin",
        cel="!has(self.autoscaling) || self.autoscaling.minReplicas > 0 || self.autoscaling.mode == 'Builtin'",
        check=lambda s: _autoscaling_ok(
            s, lambda a: int(a.get("minReplicas", 1)) > 0 or a.get("mode", "Builtin") == "Builtin"),
        message="autoscaling.minReplicas 0 needs autoscaling.mode Builtin (the router's cold-start hold "
        "and the wake-up on queued requests come from the builtin autoscaler)",
        field_path=".autoscaling.minReplicas",
    ),
    Rule(
        name="rollout-progress",
        cel="self.rollout.maxSurge + self.rollout.maxUnavailable > 0",
        check=lambda s: int(_get(s, "rollout", "maxSurge", default=1))
        + int(_get(s, "rollout", "maxUnavailable", default=0)) > 0,
        message="rollout.maxSurge + rollout.maxUnavailable must be greater than 0 (a rollout could never progress)",
        field_path=".rollout",
    ),
    Rule(
        name="recovery-backoff",
        cel="self.recovery.backoffSeconds <= self.recovery.maxBackoffSeconds",
        check=lambda s: int(_get(s, "recovery", "backoffSeconds", default=10))
        <= int(_get(s, "recovery", "maxBackoffSeconds", default=600)),
        message="recovery.backoffSeconds must not exceed recovery.maxBackoffSeconds",
        field_path=".recovery.backoffSeconds",
    ),
    Rule(
        name="modes-unique",
        cel="self.modes.all(m, self.modes.exists_one(x, x == m))",
        check=lambda s: len(set(s.get("modes", []))) == len(s.get("modes", [])),
        message="modes must not repeat a mode",
        field_path=".modes",
    ),
    Rule(
        name="aliases-not-name",
        cel="!has(self.model.aliases) || !self.model.aliases.exists(a, a == self.model.name)",
        check=lambda s: _get(s, "model", "name") not in (_get(s, "model", "aliases", default=[]) or []),
        message="model.aliases must not contain model.name",
        field_path=".model.aliases",
    ),
    Rule(
        name="aliases-unique",
        cel="!has(self.model.aliases) || self.model.aliases.all(a, self.model.aliases.exists_one(x, x == a))",
        check=lambda s: len(set(_get(s, "model", "aliases", default=[]) or []))
        == len(_get(s, "model", "aliases", default=[]) or []),
        message="model.aliases must not repeat a name",
        field_path=".model.aliases",
    ),
    Rule(
        name="revision-hf-only",
        cel="!has(self.model.revision) || self.model.source.startsWith('hf://')",
        check=lambda s: _get(s, "model", "revision") is None
        or str(_get(s, "model", "source", default="")).startswith("hf://"),
        message="model.revision pins hf:// sources only (for s3:// or pvc:// put the version in the path)",
        field_path=".model.revision",
    ),
)

_BY_NAME = {r.name: r for r in _BASE_RULES}

RULES: tuple[Rule, ...] = (
    *_BASE_RULES,
    *(_for_pools(_BY_NAME[name]) for name in _SHAPE_RULES),
    Rule(
        name="pool-names-unique",
        cel="!has(self.pools) || self.pools.all(p, self.pools.exists_one(q, q.name == p.name))",
        check=lambda s: len({p.get("name") for p in s.get("pools") or []}) == len(s.get("pools") or []),
        message="pools must not repeat a pool name",
        field_path=".pools",
    ),
    Rule(
        name="pool-min-le-max",
        cel="!has(self.pools) || self.pools.all(p, !has(p.minReplicas) || !has(p.maxReplicas)"
        " || p.minReplicas <= p.maxReplicas)",
        check=lambda s: all(p.get("minReplicas") is None or p.get("maxReplicas") is None
                            or p["minReplicas"] <= p["maxReplicas"] for p in s.get("pools") or []),
        message="pools: minReplicas must not exceed maxReplicas",
        field_path=".pools",
    ),
)


def violations(spec: Spec) -> list[Rule]:
    """Rules the camelCase spec dict breaks, in declaration order."""
    return [rule for rule in RULES if not rule.check(spec)]
