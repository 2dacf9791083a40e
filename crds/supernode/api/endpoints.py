"""The endpoint record: what discovery backends (static, kubernetes, local) give the router.

One record per replica-group leader. The `static` discovery file and the file the local runtime
(`supernode up`) keeps up to date are both an `EndpointFile` in JSON or YAML.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from supernode.api.models import EngineType, Mode


class Endpoint(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    url: str = Field(description="Base URL of the group leader, e.g. http://127.0.0.1:8100")
    model: str = Field(description="Served model name")
    aliases: list[str] = Field(default_factory=list)
    modes: list[Mode] = Field(default_factory=lambda: list(Mode))
    deployment: str = Field(default="", description="Owning ModelDeployment (namespace/name or name)")
    group: int = Field(default=0, ge=0, description="Replica-group index")
    engine_type: EngineType = EngineType.BUILTIN
    ready: bool = True
    draining: bool = False
    max_concurrency: int = Field(default=32, ge=1, description="Requests one group serves at once")
    capacity_limited: bool = Field(default=False, description="Owning deployment reports CapacityLimited")
    fault: str = Field(default="", description="Why the operator fenced the group off (a device fault); not "
                       "routable while set")
    pool: str = Field(default="", description="Pool of the owning deployment's spec.pools ('' without pools)")
    capacity_weight: float = Field(
        default=1.0, gt=0, le=1000, description="Relative throughput of this group; the load scorer divides by it"
    )
    kv_events: str = Field(
        default="auto", pattern=r"^(auto|none|http|tcp://\S+)$",
        description="Where the router reads the engine's KV events: auto (the built-in engine's /v1/kv_events, "
                    "nothing for other engines), none, http (/v1/kv_events at url), or a ZMQ PUB address "
                    "tcp://host:port in vLLM's format (--kv-events-config)")
    kv_events_replay: str = Field(default="", pattern=r"^(|tcp://\S+)$",
                                  description="The engine's ZMQ replay (ROUTER) address, with a tcp:// kv_events")
    data_parallel_size: int = Field(
        default=1, ge=1, le=1024,
        description="Data-parallel ranks behind the endpoint, each with its own KV cache. With a tcp:// kv_events, "
                    "rank r publishes on that port + r and answers replays on the replay port + r (as vLLM and "
                    "SGLang offset them); the router follows every rank and sends a request to the rank holding "
                    "its prefix (docs/router.md)")
    rank_kv_events: list[str] = Field(
        default_factory=list, max_length=1024,
        description="Ranks that publish from several hosts (data-parallel ranks spread over a group's pods): "
                    "rank r's ZMQ PUB address (tcp://host:port), '' while it is not known (that rank has no feed "
                    "and the endpoint routes approximately until it is). Empty: every rank on kv_events' host, "
                    "rank r on its port + r. When set, one entry per rank (data_parallel_size)")
    rank_kv_events_replay: list[str] = Field(
        default_factory=list, max_length=1024,
        description="Rank r's ZMQ replay address beside rank_kv_events ('' for none); empty or one per rank")

    @model_validator(mode="after")
    def _rank_lists(self) -> Endpoint:
        for name, values in (("rankKvEvents", self.rank_kv_events), ("rankKvEventsReplay", self.rank_kv_events_replay)):
            if values and len(values) != self.data_parallel_size:
                raise ValueError(f"{name}: {len(values)} entries for dataParallelSize {self.data_parallel_size}")
            if any(v and not v.startswith("tcp://") for v in values):
                raise ValueError(f"{name}: every entry is a tcp:// address or ''")
        return self

    def kv_events_source(self) -> str:
        """none, http or a tcp:// address, with auto resolved by engine type."""
        if self.kv_events != "auto":
            return self.kv_events
        return "http" if self.engine_type == EngineType.BUILTIN else "none"


class EndpointFile(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    endpoints: list[Endpoint] = Field(default_factory=list)
