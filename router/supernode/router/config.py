"""RouterConfig: the router's whole configuration, parsed and validated before anything is built.

Parse, then instantiate (STYLE.md #9): `load_config(path)` gives plain validated data; `app.create_app`
builds objects from it. Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from supernode.api.models import Mode
from supernode.router.admission.config import AdmissionConfig
from supernode.router.metering.config import MeteringConfig
from supernode.router.routing.registry import FILTERS, PICKERS, SCORERS
from supernode.router.shared.config import LocalState, StateConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Larger request bodies get 413")
    log_requests: bool = True
    metrics_port: int | None = Field(default=9090, ge=0, le=65535, description="Ops port: /metrics, /health and "
                                     "/ready, apart from the public API. None = /metrics on the API port, behind "
                                     "the admin key")
    metrics_host: str | None = Field(default=None, description="Ops port address (default: server.host)")
    docs: bool = Field(default=False, description="Serve /docs and /openapi.json")
    max_connections: int = Field(default=4096, ge=1, description="Requests beyond this many open connections "
                                 "get 503")
    overflow_connections: int = Field(default=1024, ge=0, description="Beyond max_connections + this many, new "
                                      "connections are closed unanswered")
    header_timeout_s: float = Field(default=10.0, gt=0, description="Request line + headers must arrive within "
                                    "this (else the connection is closed)")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, description="Larger request headers get 431")
    keepalive_timeout_s: float = Field(default=5.0, gt=0, description="Idle keep-alive connections are closed "
                                       "after this")


class DiscoveryConfig(_Section):
    type: Literal["static", "local", "kubernetes"] = "static"
    path: str | None = Field(default=None, description="EndpointFile (JSON or YAML) for static/local")
    poll_interval_s: float = Field(default=0.25, gt=0, description="How often the file's mtime is checked")
    namespace: str | None = Field(default=None, description="kubernetes: namespace to watch (None = all)")
    api_url: str | None = Field(default=None, description="kubernetes: API server URL (default: in-cluster "
                                "service account, else kubeconfig)")
    resync_interval_s: float = Field(default=300.0, gt=0, description="kubernetes: full relist as a safety net")
    watch_timeout_s: float = Field(default=290.0, ge=1, description="kubernetes: server-side timeout of one watch")
    debounce_s: float = Field(default=0.1, ge=0, le=5, description="kubernetes: events coalesced before a recompute")
    http_port_name: str = Field(default="http", description="kubernetes: leader container port name")
    default_port: int = Field(default=8000, ge=1, le=65535)
    default_max_concurrency: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _path_needed(self) -> DiscoveryConfig:
        if self.type in ("static", "local") and not self.path:
            raise ValueError(f"discovery.path is required for discovery type {self.type!r}")
        return self


class ScorerConfig(_Section):
    name: str = Field(description="A name in routing.registry.SCORERS: cost, prefix, load, headroom, session, "
                      "kv-cache")
    weight: float = Field(default=1.0, ge=0)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return SCORERS.check(name)


class PickerConfig(_Section):
    name: str = Field(default="argmax", description="A name in routing.registry.PICKERS: argmax, power-of-two")
    top_k: int = Field(default=2, ge=2, description="power-of-two: sample two among the top k")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return PICKERS.check(name)


class ImbalanceConfig(_Section):
    """Affinity yields to load on an endpoint whose load exceeds the least loaded candidate's by more
    than `abs_threshold` requests AND by a factor of `rel_threshold` (SGLang's rule, per endpoint)."""

    abs_threshold: float = Field(default=8.0, ge=0)
    rel_threshold: float = Field(default=1.25, ge=1.0)
    saturation_guard: bool = Field(default=True, description="Affinity also yields on an endpoint whose load "
                                   "reached its max concurrency while another candidate has a free slot")
    saturation_slack: float = Field(default=2.0, ge=0, description="Requests allowed to wait on a saturated "
                                    "affine endpoint before affinity yields (a short wait for a cached prefix "
                                    "can beat a cold prefill elsewhere)")


class PrefixConfig(_Section):
    block_size: int = Field(default=64, ge=1, description="Bytes of rendered prompt text per hashed block")
    capacity_blocks: int = Field(default=200_000, ge=1, description="LRU bound of the index per endpoint")
    max_blocks_per_request: int = Field(default=4096, ge=1, description="Only the first N blocks are hashed")
    kv_events: bool = Field(default=True, description="Subscribe to engines' KV events (precise prefix index)")
    precise_max_blocks: int = Field(default=4_000_000, ge=1,
                                    description="Cached blocks one endpoint may report; more = a bad engine")
    kv_events_retry_s: float = Field(default=2.0, gt=0, description="Wait before reconnecting a KV event feed")
    kv_events_bad_input_retry_s: float = Field(default=30.0, gt=0,
                                               description="Wait after malformed KV events before trying again")


class CostConfig(_Section):
    """The `cost` scorer's model of an engine (routing/cost.py), in the time it takes to prefill one token."""

    request_tokens: float = Field(default=8192.0, ge=0, description="One request's time on an engine slot "
                                  "(prefill + decode) in prefill tokens: what each request queued ahead costs")
    busy_tokens: float = Field(default=16.0, ge=0, description="What each request already running costs "
                               "(a fuller batch is slower); orders endpoints of equal cache by load")


class CapacityConfig(_Section):
    """Measured capacity (routing.capacity): each endpoint's token rate per request slot, learned from
    the requests this router sends it, replaces the declared capacityWeight once measured."""

    measure: bool = Field(default=True, description="Learn each endpoint's capacity from its traffic (false: the "
                          "declared capacityWeight only)")
    min_samples: int = Field(default=20, ge=1, description="Finished requests on an endpoint before its "
                             "measurement replaces the declared weight")
    half_life_s: float = Field(default=120.0, gt=0, description="Older requests count half after this long")
    prefill_weight: float = Field(default=0.0, ge=0, le=1, description="An uncached prompt token counts as this "
                                  "many generated tokens (0: decode tokens only)")


DEFAULT_FILTERS: tuple[str, ...] = ("healthy", "not-draining", "serves-model-mode")


class RoutingConfig(_Section):
    filters: list[str] = Field(default_factory=lambda: list(DEFAULT_FILTERS),
                               description="Names in routing.registry.FILTERS, applied in order")
    scorers: list[ScorerConfig] = Field(
        default_factory=lambda: [
            ScorerConfig(name="prefix", weight=2.0),
            ScorerConfig(name="headroom", weight=1.0),
            ScorerConfig(name="session", weight=1.0),
        ]
    )
    picker: PickerConfig = Field(default_factory=PickerConfig)
    imbalance: ImbalanceConfig = Field(default_factory=ImbalanceConfig)
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    session_capacity: int = Field(default=100_000, ge=1, description="LRU bound of session → endpoint")
    max_attempts: int = Field(default=3, ge=1, description="Endpoints tried when failing before the first byte")

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, names: list[str]) -> list[str]:
        return [FILTERS.check(n) for n in names]


class AliasTarget(_Section):
    model: str
    mode: Mode | None = Field(default=None, description="Mode implied by the alias when the request sets none")


def _default_aliases() -> dict[str, AliasTarget]:
    return {
        "deepseek-chat": AliasTarget(model="deepseek-v4-flash", mode=Mode.NON_THINK),
        "deepseek-reasoner": AliasTarget(model="deepseek-v4-flash", mode=Mode.THINK_HIGH),
        "deepseek-flash": AliasTarget(model="deepseek-v4-flash"),
    }


def _default_patterns() -> dict[str, str]:
    flash = "deepseek-v4-flash"
    return {"claude-opus*": "deepseek-v4-pro", "claude-sonnet*": flash, "claude-haiku*": flash}


class ModelsConfig(_Section):
    aliases: dict[str, AliasTarget] = Field(default_factory=_default_aliases)
    patterns: dict[str, str] = Field(
        default_factory=_default_patterns, description="fnmatch pattern → model (e.g. claude-opus* → pro)"
    )
    default_mode: Mode = Mode.THINK_HIGH
    max_tokens_limit: int = Field(default=393_216, ge=1, description="Larger max_tokens → 400")
    default_max_tokens: int = Field(default=4096, ge=1, description="A request that sets no max_tokens / "
                                    "max_completion_tokens gets this many (reserved, sent to the engine)")
    context_tokens: dict[str, int] = Field(default_factory=dict, description="Context window per served model "
                                           "(tokens), for the prompt byte bound")
    default_context_tokens: int = Field(default=1_048_576, ge=1, description="Context window of models not in "
                                        "context_tokens")
    max_bytes_per_token: int = Field(default=64, ge=1, description="Most text bytes one token of the tokenizer "
                                     "covers: prompts of more than context x this many bytes are refused unread")


class TimeoutsConfig(_Section):
    connect_s: float = Field(default=2.0, gt=0)
    first_byte_s: float = Field(default=60.0, gt=0, description="Streaming: until the first upstream chunk")
    between_chunks_s: float = Field(default=60.0, gt=0)
    total_s: float = Field(default=900.0, gt=0, description="Non-streaming: whole upstream response")
    keepalive_s: float = Field(default=5.0, gt=0, description="SSE keep-alive period while queued")


class HealthConfig(_Section):
    scrape_interval_s: float = Field(default=1.0, ge=0, description="0 = no background scraping")
    scrape_timeout_s: float = Field(default=1.0, gt=0)
    unhealthy_after: int = Field(default=3, ge=1, description="Consecutive failures before ejection")
    healthy_after: int = Field(default=1, ge=1, description="Consecutive successes before re-admission")
    ejection_backoff_s: float = Field(default=1.0, ge=0, description="An ejected endpoint is not re-admitted "
                                      "before this; doubled for each ejection in a row (0 = re-admit at once)")
    max_ejection_backoff_s: float = Field(default=30.0, ge=0, description="Cap of the doubling; an endpoint "
                                          "that stayed healthy this long starts again from ejection_backoff_s")


class ColdStartConfig(_Section):
    """Scale to zero (spec.autoscaling.minReplicas 0): requests for a model with no ready group wait in the
    queue (streams get SSE keep-alives) while its first group starts, instead of failing at once."""

    hold_s: float = Field(default=120.0, ge=0, le=3600, description="How long a request for a cold model may "
                          "wait for its first group; then 503 + Retry-After (0 = fail at once)")
    models: list[str] = Field(default_factory=list, description="Models that may be scaled to zero: served "
                              "(listed, resolved) with no endpoint, their requests held while no group is ready")
    poll_s: float = Field(default=0.25, gt=0, le=10, description="How often a held request looks for a group")


class LocalTokenizer(_Section):
    """A tokenizer for a model whose engines do not serve one (vLLM, SGLang, MindIE)."""

    file: str = Field(description="The model's tokenizer.json (relative to the config file)")
    block_size: int = Field(ge=1, description="The engines' KV block size in tokens (their prefix-cache block)")
    hash_seed: str | None = Field(default=None, description="Name the block-hash chain is seeded with "
                                  "(default: the model name)")


class TokenizersConfig(_Section):
    """How the router gets each model's real prompt tokens (engine-compatible prefix hashes, exact token
    counts for admission). Built-in engines serve theirs (GET /v1/tokenizer); `models` names files for
    others. A model with neither is routed approximately, its token counts estimated."""

    fetch_from_engines: bool = Field(default=True, description="Ask built-in engines for their tokenizer")
    models: dict[str, LocalTokenizer] = Field(default_factory=dict, description="Served model → local tokenizer "
                                              "(takes precedence over fetching)")
    retry_s: float = Field(default=5.0, gt=0, description="Wait before asking an engine that failed again")
    inline_chars: int = Field(default=16_384, ge=0, description="Prompts with more uncached characters are "
                              "encoded in worker threads, off the event loop")
    workers: int = Field(default=2, ge=1, description="Worker threads for large prompts")
    cache_chars: int = Field(default=32 << 20, ge=0, description="Characters of encoded prompt pieces (system "
                             "prompts, earlier turns, tool catalogues) kept per model")


class RouterConfig(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    discovery: DiscoveryConfig
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)
    tokenizers: TokenizersConfig = Field(default_factory=TokenizersConfig)
    # Owned by the admission side (docs/tenants.md). It must be written out: `admission: null` = no
    # tenants, limits or queue (every caller anonymous), else tenantsFile or anonymous: true inside.
    admission: AdmissionConfig | None = None
    metering: MeteringConfig | None = None
    # Admission state shared by replicas: local (one replica) or redis (docs/tenants.md, "Several replicas").
    state: StateConfig = Field(default_factory=LocalState)

    @model_validator(mode="after")
    def _auth_is_a_choice(self) -> RouterConfig:
        if "admission" not in self.model_fields_set:
            raise ValueError("admission: say how callers authenticate: admission: {tenantsFile: FILE}, or "
                             "admission: {anonymous: true} / admission: null to run without authentication")
        return self


def parse_config(data: dict[str, Any], *, base_dir: Path | None = None) -> RouterConfig:
    """Validate a config dict; a relative discovery path is taken relative to ``base_dir``."""
    config = RouterConfig.model_validate(data)
    if base_dir is None:
        return config
    if config.discovery.path and not Path(config.discovery.path).is_absolute():
        config.discovery.path = str((base_dir / config.discovery.path).resolve())
    for local in config.tokenizers.models.values():
        if not Path(local.file).is_absolute():
            local.file = str((base_dir / local.file).resolve())
    if config.admission is not None:
        config.admission = config.admission.with_base_dir(base_dir)
    if config.metering is not None:
        config.metering = config.metering.with_base_dir(base_dir)
    return config


def load_config(path: str | Path) -> RouterConfig:
    """Read a YAML or JSON config file and validate it."""
    p = Path(path)
    text = p.read_text()
    data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the config must be a mapping, got {type(data).__name__}")
    return parse_config(data, base_dir=p.parent)
