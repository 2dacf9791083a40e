"""Every name shared by operator, engine and router: labels, annotations, env vars, conditions.

One place, one comment each (cf. LeaderWorkerSet's leaderworkerset_types.go). Never spell one of
these strings anywhere else.
"""

from __future__ import annotations

from typing import Final

# --- API identity -------------------------------------------------------------------------------
GROUP: Final = "supernode.io"  # API group of our custom resources
VERSION: Final = "v1alpha1"  # served + storage version
API_VERSION: Final = f"{GROUP}/{VERSION}"  # apiVersion field value
KIND: Final = "ModelDeployment"  # kind of the main resource
PLURAL: Final = "modeldeployments"  # REST plural
SINGULAR: Final = "modeldeployment"  # REST singular
SHORT_NAMES: Final = ("md",)  # `kubectl get md`
CATEGORIES: Final = ("supernode", "all-llm")  # `kubectl get supernode`
FIELD_MANAGER: Final = "supernode-operator"  # field manager name for server-side apply / patches
FINALIZER: Final = "supernode.io/cleanup"  # finalizer, only where cleanup needs it

# --- Labels (on every object the operator renders; selectors use them) -------------------------
LABEL_PREFIX: Final = "supernode.io/"
LABEL_DEPLOYMENT: Final = "supernode.io/deployment"  # owning ModelDeployment name
LABEL_GROUP: Final = "supernode.io/group"  # replica-group index ("0", "1", ...)
LABEL_POOL: Final = "supernode.io/pool"  # pool name of a group of a deployment with spec.pools (absent without)
LABEL_ROLE: Final = "supernode.io/role"  # "leader" (rank 0, serves HTTP) or "worker"
LABEL_RANK: Final = "supernode.io/rank"  # node rank inside the group's distributed world
LABEL_MODEL: Final = "supernode.io/model"  # served model name (sanitised to a label value)
LABEL_REVISION: Final = "supernode.io/revision"  # hash of the group template; rollouts compare it
LABEL_SUPERNODE: Final = "supernode.io/supernode"  # supernode id the group is bound to
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"  # always "supernode-operator"
LABEL_NAME: Final = "app.kubernetes.io/name"  # "supernode-engine" on engine pods
LABEL_COMPONENT: Final = "app.kubernetes.io/component"  # engine | router | operator
ROLE_LEADER: Final = "leader"
ROLE_WORKER: Final = "worker"
MANAGED_BY_VALUE: Final = "supernode-operator"

# --- Annotations --------------------------------------------------------------------------------
ANNOTATION_DRAINING: Final = "supernode.io/draining"  # set on a group being replaced; router sends it nothing new
ANNOTATION_DRAIN_STARTED: Final = "supernode.io/drain-started"  # RFC 3339 time draining began
ANNOTATION_DRAINED: Final = "supernode.io/drained"  # "true": every router saw the draining group idle
ANNOTATION_MODES: Final = "supernode.io/modes"  # comma-separated modes a leader serves
ANNOTATION_ALIASES: Final = "supernode.io/aliases"  # comma-separated model aliases a leader serves
ANNOTATION_RESTARTS: Final = "supernode.io/group-restarts"  # gang restarts consumed from the budget
ANNOTATION_LAST_RESTART: Final = "supernode.io/last-restart"  # RFC 3339 time of the last gang restart
ANNOTATION_FAILURE_SEEN: Final = "supernode.io/failure-seen"  # RFC 3339 time a group's failure was first seen
ANNOTATION_ENGINE_TYPE: Final = "supernode.io/engine-type"  # builtin | vllm | sglang | mindie (router metric map)
ANNOTATION_DEVICE_FAULT: Final = "supernode.io/device-fault"  # on a leader pod: "<action>: <why>"; routers skip it
ANNOTATION_FAULT_HANDLED: Final = "supernode.io/device-fault-handled"  # digest of the faults a group restarted for
ANNOTATION_MAX_CONCURRENCY: Final = "supernode.io/max-concurrency"  # engine.maxConcurrency of the leader's pool
ANNOTATION_CAPACITY_WEIGHT: Final = "supernode.io/capacity-weight"  # the pool's capacityWeight (router load scorer)
# On every pod of a vLLM/SGLang group with kvEvents and parallelism.data > 1: the data-parallel ranks each pod
# hosts (data / pods). Pod i hosts ranks i*local .. i*local+local-1 (global ranks: the engines offset each rank's
# KV event ports by it); router discovery maps each rank's publisher to the pod that runs it.
ANNOTATION_DP_LOCAL: Final = "supernode.io/data-parallel-local"
POD_INDEX_LABEL: Final = "apps.kubernetes.io/pod-index"  # set by the StatefulSet controller (k8s >= 1.28)
LWS_WORKER_INDEX_LABEL: Final = "leaderworkerset.sigs.k8s.io/worker-index"  # set by the LWS controller
ANNOTATION_SP_BLOCK: Final = "sp-block"  # MindCluster: chips per logical SuperPoD
ANNOTATION_SP_FIT: Final = "sp-fit"  # MindCluster: SuperPoD fitting policy ("idlest")

# --- Node labels we read (inventory) -----------------------------------------------------------
NODE_LABEL_ASCEND_SUPERPOD: Final = "huawei.com/superpod-id"  # default SuperPoD id label (configurable)
NODE_LABEL_NVIDIA_CLIQUE: Final = "nvidia.com/gpu.clique"  # NVLink clique = NVIDIA "supernode"
NODE_LABEL_NVIDIA_PRODUCT: Final = "nvidia.com/gpu.product"  # GPU product (feature discovery)
NODE_LABEL_ASCEND_CHIP: Final = "node.kubernetes.io/npu.chip.name"  # Ascend chip name, e.g. 910C
NODE_LABEL_ACCELERATOR: Final = "accelerator"  # e.g. huawei-Ascend910
NODE_LABEL_ACCELERATOR_TYPE: Final = "accelerator-type"  # e.g. module-a3-16
NODE_LABEL_HYPERNODE: Final = "volcano.sh/hypernode"  # Volcano network-topology tier member
NODE_LABEL_HOSTNAME: Final = "kubernetes.io/hostname"  # node affinity key

# --- Device health inputs we read (docs/operator.md, "Device faults") -----------------------------
ASCEND_DEVICE_INFO_NAMESPACE: Final = "kube-system"  # where the Ascend device plugin writes its per-node ConfigMap
ASCEND_DEVICE_INFO_PREFIX: Final = "mindx-dl-deviceinfo-"  # ConfigMap name = prefix + node name
ASCEND_DEVICE_INFO_KEY: Final = "DeviceInfoCfg"  # data key: {"DeviceInfo": {...}, "CheckCode": sha256}
ASCEND_MANUAL_SEPARATE_KEY: Final = "ManuallySeparateNPU"  # data key: chips an admin isolated (comma list)
POD_ANNOTATION_ASCEND_REAL: Final = "huawei.com/AscendReal"  # on a pod: the chips the device plugin gave it

# --- Extended resources ------------------------------------------------------------------------
RESOURCE_ASCEND: Final = "huawei.com/Ascend910"  # Ascend device-plugin resource (910B/910C/A3)
RESOURCE_NVIDIA: Final = "nvidia.com/gpu"  # NVIDIA device-plugin resource

# --- Env vars the engine ranks read (set by operator and local runtime) -------------------------
ENV_RANK: Final = "SUPERNODE_RANK"  # this pod's node rank in the group (0 = leader)
ENV_WORLD_SIZE: Final = "SUPERNODE_WORLD_SIZE"  # number of node ranks (pods) in the group
ENV_LEADER_ADDR: Final = "SUPERNODE_LEADER_ADDR"  # host of rank 0 (torch.distributed master)
ENV_LEADER_PORT: Final = "SUPERNODE_LEADER_PORT"  # port of the rendezvous on rank 0
LEADER_ADDR_PLACEHOLDER: Final = "$(LWS_LEADER_ADDRESS)"  # planned leader address; k8s expands it, others substitute
ENV_DEVICES_PER_POD: Final = "SUPERNODE_DEVICES_PER_POD"  # accelerator devices this pod drives
ENV_TENSOR_PARALLEL: Final = "SUPERNODE_TENSOR_PARALLEL"  # tensor-parallel size of the group
ENV_EXPERT_PARALLEL: Final = "SUPERNODE_EXPERT_PARALLEL"  # expert-parallel size of the group
ENV_PIPELINE_PARALLEL: Final = "SUPERNODE_PIPELINE_PARALLEL"  # pipeline-parallel size
ENV_DATA_PARALLEL: Final = "SUPERNODE_DATA_PARALLEL"  # data-parallel size inside one group
ENV_DEPLOYMENT: Final = "SUPERNODE_DEPLOYMENT"  # owning ModelDeployment name
ENV_GROUP: Final = "SUPERNODE_GROUP"  # replica-group index
ENV_POOL: Final = "SUPERNODE_POOL"  # pool name ("" without spec.pools)
ENV_MODEL_NAME: Final = "SUPERNODE_MODEL_NAME"  # served model name
ENV_MODEL_DIR: Final = "SUPERNODE_MODEL_DIR"  # local checkpoint directory inside the pod
ENV_DEVICE: Final = "SUPERNODE_DEVICE"  # cpu | cuda | npu
ENV_HTTP_PORT: Final = "SUPERNODE_HTTP_PORT"  # leader's HTTP port
ENV_SUPERNODE_ID: Final = "SUPERNODE_SUPERNODE_ID"  # supernode the group is bound to
ENV_LWS_LEADER_ADDRESS: Final = "LWS_LEADER_ADDRESS"  # set by LeaderWorkerSet
ENV_LWS_GROUP_SIZE: Final = "LWS_GROUP_SIZE"  # set by LeaderWorkerSet
ENV_LWS_WORKER_INDEX: Final = "LWS_WORKER_INDEX"  # set by LeaderWorkerSet
ENV_ASCEND_VISIBLE_DEVICES: Final = "ASCEND_RT_VISIBLE_DEVICES"  # Ascend device visibility
ENV_CUDA_VISIBLE_DEVICES: Final = "CUDA_VISIBLE_DEVICES"  # NVIDIA device visibility
ENV_HCCL_IF_IP: Final = "HCCL_IF_IP"  # HCCL: interface IP
ENV_HCCL_SOCKET_IFNAME: Final = "HCCL_SOCKET_IFNAME"  # HCCL: socket interface
ENV_GLOO_SOCKET_IFNAME: Final = "GLOO_SOCKET_IFNAME"  # gloo: socket interface
ENV_HCCL_BUFFSIZE: Final = "HCCL_BUFFSIZE"  # HCCL buffer size (MB)
ENV_HCCL_OP_EXPANSION_MODE: Final = "HCCL_OP_EXPANSION_MODE"  # "AIV" on A3
ENV_HCCL_LOGIC_SUPERPOD_ID: Final = "HCCL_LOGIC_SUPERPOD_ID"  # logical SuperPoD id for HCCL
ENV_NCCL_SOCKET_IFNAME: Final = "NCCL_SOCKET_IFNAME"  # NCCL socket interface
ENV_ENGINE_TOKEN: Final = "SUPERNODE_ENGINE_TOKEN"  # shared router->engine bearer token (engines require it when set)
ENV_GROUP_SECRET: Final = "SUPERNODE_GROUP_SECRET"  # per-group secret every rank proves to the group's store
ENV_GROUP_KEY: Final = "SUPERNODE_GROUP_KEY"  # operator only: key the per-group store secrets are derived from
ENV_GROUP_BIND_ADDR: Final = "SUPERNODE_GROUP_BIND_ADDR"  # address the leader's group store binds (the pod IP)
ENV_ADMIN_KEY: Final = "SUPERNODE_ADMIN_KEY"  # router: admin API key (usage, tenants); `supernode up` sets one

RENDEZVOUS_PORT: Final = 29500  # torch.distributed / vLLM / SGLang rendezvous on a group's leader
DP_RPC_PORT: Final = 13345  # vLLM's data-parallel RPC port on the leader (groups with ranks on several pods)

# --- Named container ports on engine pods (the operator renders them; router discovery reads them) ---
PORT_HTTP: Final = "http"  # the leader's OpenAI-compatible HTTP server
PORT_KV_EVENTS: Final = "kv-events"  # ZMQ PUB of the engine's KV events (vLLM format), when spec.engine.kvEvents
PORT_KV_REPLAY: Final = "kv-replay"  # ZMQ ROUTER answering replay requests for missed KV event batches


def kv_port_name(base: str, rank: int) -> str:
    """The named port of data-parallel rank ``rank``'s KV event socket: ``base`` for rank 0, ``base-RANK``
    after it (vLLM and SGLang publish once per rank, on the configured port plus the rank)."""
    return base if rank == 0 else f"{base}-{rank}"


# --- Condition types and reasons ---------------------------------------------------------------
COND_READY: Final = "Ready"  # all desired groups are ready
COND_PROGRESSING: Final = "Progressing"  # groups being created, rolled or scaled
COND_DEGRADED: Final = "Degraded"  # a group exhausted its restart budget, or the spec is invalid
COND_CAPACITY_LIMITED: Final = "CapacityLimited"  # fewer groups placeable than desired
CONDITION_TYPES: Final = (COND_READY, COND_PROGRESSING, COND_DEGRADED, COND_CAPACITY_LIMITED)

# --- Reasoning modes ---------------------------------------------------------------------------
MODE_NON_THINK: Final = "non-think"  # thinking disabled
MODE_THINK_HIGH: Final = "think-high"  # thinking, effort high
MODE_THINK_MAX: Final = "think-max"  # thinking, effort max (instruction prefix in the model)
MODES: Final = (MODE_NON_THINK, MODE_THINK_HIGH, MODE_THINK_MAX)

# --- HTTP headers ------------------------------------------------------------------------------
HEADER_SESSION_ID: Final = "x-session-id"  # session affinity key
HEADER_SERVED_MODEL: Final = "x-supernode-model"  # model that actually served (after spill-over)
HEADER_SERVED_MODE: Final = "x-supernode-mode"  # mode that actually served (after spill-over)
HEADER_ENDPOINT: Final = "x-supernode-endpoint"  # endpoint (group) that served
HEADER_REQUEST_ID: Final = "x-request-id"  # request id propagated end to end

# --- Prefix-cache block hashing (shared by engine and router) ----------------------------------
DEFAULT_BLOCK_SIZE: Final = 16  # tokens per KV block
