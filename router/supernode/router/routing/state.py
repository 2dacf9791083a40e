"""Live per-endpoint state (stats, health, router in-flight) and the table discovery updates."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from supernode.api.endpoints import Endpoint
from supernode.api.models import Mode
from supernode.router.routing.capacity import Throughput


@dataclass(slots=True)
class EngineStats:
    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0  # 0..1
    scraped: bool = False
    foreign: float = 0.0  # requests on the engine not sent by this router, as of the last scrape or load record


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long an ejected endpoint stays out: `base_s`, doubled per ejection in a row, at most `max_s`."""

    base_s: float = 0.0
    max_s: float = 0.0

    def delay(self, ejections: int) -> float:
        return min(self.max_s, self.base_s * 2 ** max(0, ejections - 1)) if self.base_s > 0 else 0.0


NO_BACKOFF = Backoff()


@dataclass(slots=True)
class EndpointState:
    endpoint: Endpoint
    stats: EngineStats = field(default_factory=EngineStats)
    healthy: bool = True
    failures: int = 0  # consecutive
    successes: int = 0  # consecutive
    inflight: int = 0  # requests this router has open to it
    ejections: int = 0  # ejections in a row (the back-off doubles with each)
    ejected_until: float = 0.0  # monotonic time before which no success re-admits it
    admitted_at: float = 0.0  # monotonic time it was last (re-)admitted
    throughput: Throughput = field(default_factory=Throughput)  # measured from this router's requests
    measured: float = 0.0  # capacity weight from `throughput` (routing.capacity.reweigh); 0 = not yet
    load_fed: bool = False  # the engine streams its request count (KV event feed): the scrape leaves `foreign`
    rank_inflight: dict[int, int] = field(default_factory=dict)  # data-parallel rank → requests we sent it by name

    @property
    def key(self) -> str:
        return self.endpoint.url

    @property
    def declared(self) -> float:
        return self.endpoint.capacity_weight

    @property
    def slots(self) -> int:
        return self.endpoint.max_concurrency

    @property
    def capacity(self) -> float:
        """The weight load is divided by: measured once there are enough samples, else the declared one."""
        return self.measured or self.endpoint.capacity_weight

    @property
    def load(self) -> float:
        """Requests on the engine: ours (exact, instant) plus others' (other router replicas, direct
        clients) as of the engine's last load record, or of the last scrape where the engine streams
        none. Using the raw count instead would lag and make a just-freed engine look busy."""
        return self.inflight + self.stats.foreign

    def apply_scrape(self, stats: EngineStats) -> None:
        if self.load_fed:
            stats.foreign = self.stats.foreign
        else:
            stats.foreign = max(0.0, stats.running + stats.waiting - self.inflight)
        self.stats = stats

    def apply_engine_load(self, total: int | None) -> None:
        """The engine's running + waiting requests from its KV event feed (milliseconds old); None: the
        feed stopped, and the next scrape counts others' requests again."""
        if total is None:
            self.load_fed = False
            return
        self.load_fed = True
        self.stats.foreign = max(0.0, total - self.inflight)

    def record_failure(self, unhealthy_after: int, now: float = 0.0, backoff: Backoff = NO_BACKOFF) -> bool:
        """One failed call or probe; True when it ejects the endpoint (for `backoff`'s delay at least)."""
        self.successes = 0
        self.failures += 1
        if not self.healthy or self.failures < unhealthy_after:
            return False
        self.healthy = False
        if now - self.admitted_at > backoff.max_s:  # it served well for a while: start the doubling over
            self.ejections = 0
        self.ejections += 1
        self.ejected_until = now + backoff.delay(self.ejections)
        return True

    def record_success(self, healthy_after: int, now: float = 0.0) -> bool:
        """One successful probe; True when it re-admits the endpoint (not before its back-off ends)."""
        self.failures = 0
        self.successes += 1
        if self.healthy or self.successes < healthy_after or now < self.ejected_until:
            return False
        self.healthy = True
        self.admitted_at = now
        return True


HOME_KEY_BLOCKS = 4  # the prefix that picks a request's home endpoints: long enough to tell system prompts apart


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    request_id: str
    model: str
    mode: Mode
    # Approximate: chained over the prompt text's UTF-8 bytes; the router passes a LazyRequestHashes
    # (computed only as far as read: not at all for precise endpoints and token-hashed prompts).
    block_hashes: Sequence[int] = ()
    session: str | None = None
    # Engine-compatible: chained over the prompt's real token ids with the engine's block size and hash
    # seed (supernode.api.hashing.block_hashes); empty when the router has no tokenizer for the model.
    token_block_hashes: tuple[int, ...] = ()
    prompt_tokens: int = 0  # the prompt's token count (exact when tokenized, else estimated); 0 = unknown

    @property
    def routing_key(self) -> str:
        """Deterministic tie-break seed: the prompt's leading blocks (its system prompt, say), else the
        session, else the request id. Seeding with the prefix gives each prefix a stable rendezvous
        order of endpoints, so all its sessions share a home and, when it overflows, it grows onto the
        same next endpoints instead of scattering over the fleet."""
        head = self.block_hashes[:HOME_KEY_BLOCKS]  # only these are computed for a lazy sequence
        if head:
            return str(head[-1])
        return self.session or self.request_id


class EndpointTable:
    """The endpoints discovery knows, each with its live state (kept across discovery updates)."""

    def __init__(self, on_removed: Callable[[str], None] | None = None,
                 on_fault: Callable[[Endpoint], None] | None = None):
        self._states: dict[str, EndpointState] = {}
        self._on_removed = on_removed
        self._on_fault = on_fault  # an endpoint the operator fenced off (device fault) since the last update
        self.version = 0
        self.cold: set[str] = set()  # models served with no endpoint now (scaled to zero; supernode.router.demand)

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        fresh: dict[str, EndpointState] = {}
        for ep in endpoints:
            state = self._states.get(ep.url)
            if ep.fault and self._on_fault and (state is None or not state.endpoint.fault):
                self._on_fault(ep)
            if state is None:
                state = EndpointState(endpoint=ep)
            else:
                state.endpoint = ep
            fresh[ep.url] = state
        for url in self._states.keys() - fresh.keys():
            if self._on_removed:
                self._on_removed(url)
        self._states = fresh
        self.version += 1

    def __iter__(self) -> Iterator[EndpointState]:
        return iter(list(self._states.values()))

    def __len__(self) -> int:
        return len(self._states)

    def get(self, url: str) -> EndpointState | None:
        return self._states.get(url)

    def offered_modes(self, model: str) -> set[Mode]:
        """Modes any endpoint of `model` announces, ready or not (what its deployments offer)."""
        return {mode for s in self._states.values() if s.endpoint.model == model for mode in s.endpoint.modes}

    def served_models(self) -> tuple[set[str], dict[str, str]]:
        """(model names, alias → model) announced by endpoints, plus cold models (scaled to zero)."""
        models: set[str] = set(self.cold)
        aliases: dict[str, str] = {}
        for s in self._states.values():
            models.add(s.endpoint.model)
            for alias in s.endpoint.aliases:
                aliases.setdefault(alias, s.endpoint.model)
        return models, aliases
