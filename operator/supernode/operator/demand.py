"""Router signals → one autoscaling `Sample` per deployment (pure).

Router replicas are found through their Service (its selector picks the ready router pods); each
answers `GET /autoscaling/signals` (supernode.router.demand). Every replica queues and admits its own
share, so queued requests, queued tokens and in-flight requests add up across replicas; the oldest wait
is the worst one; KV usage is the engines' own number (every replica scrapes the same engines), so the
highest seen is taken. Requests a router refused because no group was ready (a cold model) count as
queued demand, so a deployment scaled to zero wakes up.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from supernode.api.autoscale import Sample

SIGNALS_PATH = "/autoscaling/signals"  # served by every router replica


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def router_urls(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], port: int) -> list[str]:
    """Signal URLs of the ready pods the router Service selects."""
    selector = (service.get("spec") or {}).get("selector") or {}
    out = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        ip = status.get("podIP")
        if ip and _ready(pod) and _matches(meta.get("labels") or {}, selector) and not meta.get("deletionTimestamp"):
            host = f"[{ip}]" if ":" in ip else ip
            out.append(f"http://{host}:{port}{SIGNALS_PATH}")
    return sorted(out)


@dataclass
class Totals:
    """Monotonic counters last seen per (router, model): refusals and spill-overs become per-poll deltas."""

    refused: dict[tuple[str, str], float] = field(default_factory=dict)
    spilled: dict[tuple[str, str], float] = field(default_factory=dict)
    at: dict[tuple[str, str], float] = field(default_factory=dict)

    def delta(self, table: dict[tuple[str, str], float], key: tuple[str, str], value: float) -> float:
        previous = table.get(key)
        table[key] = value
        return 0.0 if previous is None or value < previous else value - previous


def sample_for(names: Collection[str], answers: Mapping[str, Mapping[str, Any]], now: float,
               totals: Totals) -> Sample:
    """One Sample for the model served under `names` from every router's answer (URL → JSON)."""
    if not answers:
        return Sample(at=now)
    queued = tokens = in_flight = refused = spilled = 0.0
    wait = 0.0
    kv: float | None = None
    for url, body in answers.items():
        r_refused = r_spilled = 0.0
        for pool in body.get("pools") or []:
            if pool.get("model") not in names:
                continue
            queued += float(pool.get("queued", 0))
            tokens += float(pool.get("queuedTokens", 0))
            in_flight += float(pool.get("inFlight", 0))
            wait = max(wait, float(pool.get("oldestWaitSeconds", 0.0)))
            r_refused += float(pool.get("noCapacityTotal", 0))
            r_spilled += float(pool.get("spilledTotal", 0))
        key = (url, min(names))
        refused += totals.delta(totals.refused, key, r_refused)
        dt = now - totals.at.get(key, now)
        totals.at[key] = now
        spill = totals.delta(totals.spilled, key, r_spilled)
        spilled += spill / dt if dt > 0 else 0.0
        for model in body.get("models") or []:
            if model.get("model") in names and model.get("kvCacheUsage") is not None:
                kv = max(kv or 0.0, float(model["kvCacheUsage"]))
    return Sample(at=now, queued=queued + refused, in_flight=in_flight, queued_tokens=tokens, kv_usage=kv,
                  queue_wait=wait, spill_rate=spilled)


def idle_draining_by_pool(deployment: str, answers: Mapping[str, Mapping[str, Any]]) -> dict[str, set[int]]:
    """Groups of `deployment` ("namespace/name") that every router reports draining with nothing in flight
    (their own open requests, and the engine's running + waiting when scraped), by pool ("" without
    spec.pools; group indexes restart in each pool): safe to delete now."""
    per_router: list[dict[tuple[str, int], bool]] = []
    for body in answers.values():
        mine: dict[tuple[str, int], bool] = {}
        for ep in body.get("draining") or []:
            if ep.get("deployment") == deployment:
                engine = float(ep.get("engineRunning", 0)) + float(ep.get("engineWaiting", 0))
                mine[(str(ep.get("pool") or ""), int(ep.get("group", -1)))] = float(ep.get("inFlight", 0)) == 0 and (
                    not ep.get("scraped") or engine == 0)
        per_router.append(mine)
    if not per_router:
        return {}
    groups = set.intersection(*(set(m) for m in per_router))
    out: dict[str, set[int]] = {}
    for pool, group in groups:
        if all(m[(pool, group)] for m in per_router):
            out.setdefault(pool, set()).add(group)
    return out


def idle_draining(deployment: str, answers: Mapping[str, Mapping[str, Any]], pool: str = "") -> set[int]:
    """The idle draining groups of one pool of `deployment` (idle_draining_by_pool)."""
    return idle_draining_by_pool(deployment, answers).get(pool, set())


def pool_capacity(deployment: str, answers: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Capacity per group of each pool of `deployment`, as the routers measure it (their `capacity` entries,
    averaged over routers); pools no router reports are absent (the declared capacityWeight holds)."""
    seen: dict[str, list[float]] = {}
    for body in answers.values():
        for entry in body.get("capacity") or []:
            if not isinstance(entry, Mapping) or entry.get("deployment") != deployment:
                continue
            try:
                weight = float(entry.get("weight", 0))
            except (TypeError, ValueError):
                continue
            if weight > 0 and weight == weight:
                seen.setdefault(str(entry.get("pool") or ""), []).append(weight)
    return {pool: sum(ws) / len(ws) for pool, ws in seen.items()}
