"""Autoscaling simulation: a 24-hour diurnal trace with bursts for a Pro and a Flash deployment sharing
a fixed pool of supernodes (one replica group per supernode), groups taking a realistic cold start to
become Ready. Three policies side by side on the same trace:

- static-peak: each deployment fixed at its peak demand (bursts included) at the same per-group
  utilisation target the autoscaler uses -- provisioning by hand for the peak; the pool is sized for it;
- static-min: the fewest fixed groups that keep the queue wait within the SLO for >= 99 % of the
  minutes (hindsight sizing at ~100 % load; a lower bound no real static plan reaches);
- threshold: a naive autoscaler (add a group while requests queue, drop one below 50 % load; no
  windows, no pending guard, no lead time, no arbitration);
- builtin: `supernode.api.autoscale.decide` with the spec defaults, the learned cold-start lead time,
  the pending guard and Pro-over-Flash priority.

Reported per policy: group-hours (starting and draining groups count), minutes whose worst queue wait
exceeded the SLO, scale events, reversals (opposite steps of one deployment within the 300 s down
window), preemptions. Queues are a fluid model: arrivals per step, in-flight requests finish at
1 / service time (dI/dt = admitted - I/S per step), a group runs up to engine.maxConcurrency at once.

    python benchmarks/autoscaling_sim.py [--hours 24] [--seed 1] [--pool N] [--json]
    python benchmarks/autoscaling_sim.py --smoke      # a few seconds; run by tests/api/test_autoscaling_sim.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field

from supernode.api import autoscale as A

DT = 15.0  # seconds per step (the operator's sampling interval)
DAY = 86_400.0
DOWN_WINDOW = 300.0  # reversal window = the default scale-down stabilisation window


@dataclass(frozen=True)
class ModelSpec:
    name: str
    peak_rps: float
    trough: float  # trough / peak of the diurnal curve
    peak_hour: float
    service_s: float  # mean seconds one request holds a slot
    concurrency: int  # engine.maxConcurrency
    cold_start_s: float  # scale-up -> Ready (weights load + warm-up)
    slo_wait_s: float  # queue-wait SLO
    priority: int
    utilization: int = 80  # spec.autoscaling.target.utilization the operator of this model would set
    min_replicas: int = 1
    max_replicas: int = 16


PRO = ModelSpec("v4-pro", peak_rps=6.0, trough=0.15, peak_hour=14.0, service_s=40.0, concurrency=32,
                cold_start_s=600.0, slo_wait_s=30.0, priority=100)
FLASH = ModelSpec("v4-flash", peak_rps=25.0, trough=0.2, peak_hour=20.0, service_s=8.0, concurrency=48,
                  cold_start_s=240.0, slo_wait_s=10.0, priority=10)


@dataclass(frozen=True)
class Burst:
    start: float
    length: float
    factor: float  # rate multiplier while it lasts


def make_trace(model: ModelSpec, seconds: float, rng: random.Random) -> list[float]:
    """Arrival rate (req/s) per step: diurnal cosine, 2-6 bursts a day of +15-35 % for 5-20 min, 5 % noise."""
    bursts = [Burst(rng.uniform(0, seconds), rng.uniform(300, 1200), 1 + rng.uniform(0.15, 0.35))
              for _ in range(max(1, round(rng.uniform(2, 6) * seconds / DAY)))]
    out = []
    for i in range(int(seconds / DT)):
        t = i * DT
        phase = 2 * math.pi * (t / 3600 - model.peak_hour) / 24
        diurnal = model.trough + (1 - model.trough) * (0.5 + 0.5 * math.cos(phase))
        factor = max((b.factor for b in bursts if b.start <= t < b.start + b.length), default=1.0)
        out.append(model.peak_rps * diurnal * factor * (1 + rng.gauss(0, 0.05)))
    return out


@dataclass
class Group:
    created: float
    ready_at: float
    gone_at: float | None = None  # set when draining: the supernode is free again at this time


@dataclass
class Deployment:
    model: ModelSpec
    rates: list[float]
    groups: list[Group] = field(default_factory=list)
    queue: float = 0.0
    in_flight: float = 0.0
    group_seconds: float = 0.0
    violating: set[int] = field(default_factory=set)  # minute indexes
    events: list[tuple[float, str]] = field(default_factory=list)
    preemptions: int = 0
    history: A.History = field(default_factory=lambda: A.History(keep=1800))
    lead_time: float = 300.0  # spec default cold-start guess; learned from observed starts
    worst_wait: float = 0.0

    def live(self) -> list[Group]:
        return [g for g in self.groups if g.gone_at is None]

    def ready(self, t: float) -> int:
        return sum(g.ready_at <= t for g in self.live())

    def holding(self, t: float) -> int:
        """Supernodes this deployment holds (starting, ready and draining groups)."""
        return sum(g.gone_at is None or g.gone_at > t for g in self.groups)

    def add(self, t: float, rng: random.Random, start_at: float | None = None) -> None:
        begin = t if start_at is None else start_at
        self.groups.append(Group(created=t, ready_at=begin + self.model.cold_start_s * rng.uniform(0.85, 1.2)))
        self.events.append((t, "Up"))

    def drain(self, t: float) -> float:
        live = self.live()
        victim = max(live, key=lambda g: g.ready_at)  # the newest (a starting one first)
        victim.gone_at = t + (min(self.model.service_s * 2, 120.0) if victim.ready_at <= t else 0.0)
        self.events.append((t, "Down"))
        return victim.gone_at

    def step(self, i: int, t: float) -> None:
        m = self.model
        for g in self.groups:
            if g.gone_at is None and g.ready_at <= t < g.ready_at + DT and g.created != g.ready_at:
                self.lead_time = A.learn_cold_start(self.lead_time if self.events else None, g.ready_at - g.created)
        self.groups = [g for g in self.groups if g.gone_at is None or g.gone_at > t]
        self.group_seconds += self.holding(t) * DT
        ready = self.ready(t)
        # dI/dt = a - I/S over the step (admission rate a, mean service S), I never above the slots.
        decay = math.exp(-DT / m.service_s)
        self.queue += self.rates[i] * DT
        a_max = max(0.0, (ready * m.concurrency - self.in_flight * decay) / (m.service_s * (1 - decay)))
        rate = min(self.queue / DT, a_max)
        self.queue -= rate * DT
        self.in_flight = rate * m.service_s * (1 - decay) + self.in_flight * decay
        throughput = ready * m.concurrency / m.service_s
        wait = self.queue / throughput if throughput > 0 else (math.inf if self.queue > 0.5 else 0.0)
        if self.queue < 0.5:
            wait = 0.0
        self.worst_wait = max(self.worst_wait, wait)
        if wait > m.slo_wait_s:
            self.violating.add(int(t // 60))
        self.history.add(A.Sample(at=t, queued=round(self.queue), in_flight=self.in_flight,
                                  queue_wait=None if math.isinf(wait) else wait))


def policy_for(model: ModelSpec) -> A.Policy:
    return A.Policy(min_replicas=model.min_replicas, max_replicas=model.max_replicas,
                    max_concurrency=model.concurrency, priority=model.priority, utilization=model.utilization / 100)


def run(kind: str, models: list[ModelSpec], traces: list[list[float]], pool: int, static: list[int],
        seed: int) -> list[Deployment]:
    """kind: "static" (fixed at `static`), "threshold" or "builtin"."""
    rng = random.Random(seed)
    deps = [Deployment(m, r) for m, r in zip(models, traces, strict=True)]
    for d, n in zip(deps, static, strict=True):
        # Autoscalers start warm: sized for the first 15 minutes' demand, as if they had been running.
        first = max(d.rates[:60])
        warm = math.ceil(first * d.model.service_s / (d.model.concurrency * d.model.utilization / 100))
        start = n if kind == "static" else max(d.model.min_replicas, warm)
        d.groups = [Group(created=0.0, ready_at=0.0) for _ in range(start)]
    last: dict[str, tuple[float, str]] = {}
    steps = len(traces[0])
    for i in range(steps):
        t = i * DT
        for d in deps:
            d.step(i, t)
        if kind == "static":
            continue
        for d in sorted(deps, key=lambda d: -d.model.priority):
            free = pool - sum(x.holding(t) for x in deps)
            if kind == "threshold":
                _threshold(d, t, free, rng)
                continue
            cur, ready = len(d.live()), d.ready(t)
            pending = ready < cur or d.holding(t) > cur
            prev = last.get(d.model.name)
            fleet = A.Fleet(current=cur, ready=ready, placeable=cur + free, lead_time=d.lead_time, pending=pending,
                            last_scale_at=prev[0] if prev else None, last_direction=prev[1] if prev else None)
            others = [A.Neighbour(x.model.name, x.model.priority, len(x.live()), x.model.min_replicas)
                      for x in deps if x is not d]
            dec = A.decide(t, d.history.samples, policy_for(d.model), fleet, others)
            if dec.desired > cur:
                start_at = None
                if dec.preempt:
                    donor = next(x for x in deps if x.model.name == dec.preempt)
                    start_at = donor.drain(t)
                    last[donor.model.name] = (t, "Down")
                    d.preemptions += 1
                d.add(t, rng, start_at)
                last[d.model.name] = (t, "Up")
            elif dec.desired < cur:
                d.drain(t)
                last[d.model.name] = (t, "Down")
    return deps


def _threshold(d: Deployment, t: float, free: int, rng: random.Random) -> None:
    m, ready, live = d.model, d.ready(t), len(d.live())
    if d.queue / max(ready, 1) > 4 and live < m.max_replicas and free > 0:
        d.add(t, rng)
    elif d.queue < 1 and ready > m.min_replicas and d.in_flight < 0.5 * ready * m.concurrency:
        d.drain(t)


def reversals(events: list[tuple[float, str]]) -> int:
    return sum(b[1] != a[1] and b[0] - a[0] < DOWN_WINDOW for a, b in itertools.pairwise(events))


def peak_size(model: ModelSpec, rates: list[float]) -> int:
    return math.ceil(max(rates) * model.service_s / (model.concurrency * model.utilization / 100))


def static_size(model: ModelSpec, rates: list[float], seed: int) -> int:
    """Fewest fixed groups keeping SLO-violating minutes within 1 %."""
    minutes = len(rates) * DT / 60
    for n in range(1, model.max_replicas + 1):
        d = run("static", [model], [rates], pool=n, static=[n], seed=seed)[0]
        if len(d.violating) <= 0.01 * minutes:
            return n
    return model.max_replicas


def summarise(kind: str, deps: list[Deployment], minutes: float) -> dict[str, object]:
    per = {d.model.name: {"groupHours": round(d.group_seconds / 3600, 1), "sloMinutes": len(d.violating),
                          "events": len(d.events), "reversals": reversals(d.events), "preemptions": d.preemptions,
                          "worstWaitS": round(min(d.worst_wait, 1e6), 1), "leadTimeS": round(d.lead_time)}
           for d in deps}
    return {"policy": kind, "groupHours": round(sum(d.group_seconds for d in deps) / 3600, 1),
            "sloMinutesPct": round(100 * sum(len(d.violating) for d in deps) / (minutes * len(deps)), 2),
            "events": sum(len(d.events) for d in deps), "reversals": sum(reversals(d.events) for d in deps),
            "preemptions": sum(d.preemptions for d in deps), "deployments": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pool", type=int, default=0, help="supernodes in the pool (default: what static needs)")
    ap.add_argument("--smoke", action="store_true", help="6 simulated hours; seconds of wall time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    hours = 6.0 if args.smoke else args.hours
    started = time.monotonic()
    rng = random.Random(args.seed)
    models = [PRO, FLASH]
    traces = [make_trace(m, hours * 3600, rng) for m in models]
    peak = [peak_size(m, r) for m, r in zip(models, traces, strict=True)]
    least = [static_size(m, r, args.seed) for m, r in zip(models, traces, strict=True)]
    pool = args.pool or sum(peak)
    minutes = hours * 60
    rows = []
    for label, kind, sizes in (("static-peak", "static", peak), ("static-min", "static", least),
                               ("threshold", "threshold", peak), ("builtin", "builtin", peak)):
        rows.append({**summarise(kind, run(kind, models, traces, pool, sizes, args.seed), minutes), "policy": label})
    base, low = float(rows[0]["groupHours"]), float(rows[1]["groupHours"])  # type: ignore[arg-type]
    for row in rows:
        row["pctOfStatic"] = round(100 * float(row["groupHours"]) / base, 1)  # type: ignore[arg-type]
        row["pctOfStaticMin"] = round(100 * float(row["groupHours"]) / low, 1)  # type: ignore[arg-type]
    builtin = rows[3]
    verdict = {"groupHoursLe65PctOfStaticPeak": float(builtin["pctOfStatic"]) <= 65.0,  # type: ignore[arg-type]
               "sloMinutesLe1Pct": float(builtin["sloMinutesPct"]) <= 1.0,  # type: ignore[arg-type]
               "zeroReversals": builtin["reversals"] == 0}
    names = [m.name for m in models]
    report = {"hours": hours, "seed": args.seed, "pool": pool, "staticPeak": dict(zip(names, peak, strict=True)),
              "staticMin": dict(zip(names, least, strict=True)), "rows": rows, "targets": verdict,
              "wallSeconds": round(time.monotonic() - started, 2)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{hours:g} h simulated, pool {pool} supernodes, seed {args.seed}; static-peak {report['staticPeak']}, "
          f"static-min {report['staticMin']}")
    print(f"{'policy':<12} {'group-h':>8} {'% peak':>7} {'% min':>6} {'SLO min %':>10} {'events':>7} "
          f"{'reversals':>10} {'preempt':>8}")
    for row in rows:
        print(f"{row['policy']:<12} {row['groupHours']:>8} {row['pctOfStatic']:>7} {row['pctOfStaticMin']:>6} "
              f"{row['sloMinutesPct']:>10} {row['events']:>7} {row['reversals']:>10} {row['preemptions']:>8}")
    for row in rows:
        for name, d in row["deployments"].items():  # type: ignore[attr-defined]
            print(f"  {row['policy']:<12} {name:<9} {d}")
    print("targets (builtin):", ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in verdict.items()))
    print(f"wall {report['wallSeconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
