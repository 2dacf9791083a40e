"""`supernode status`: the state file says what should run; the endpoints say what does."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from supernode.cli.local.procs import pid_alive
from supernode.cli.local.report import table
from supernode.cli.local.secrets import engine_auth_headers
from supernode.cli.local.statefile import load_state


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    url: str
    health: str  # "200", "503 ...", "down"
    pids: str
    alive: bool
    phase: str


def _get(client: httpx.Client, url: str) -> str:
    try:
        r = client.get(url)
    except httpx.HTTPError:
        return "down"
    return str(r.status_code) if r.status_code == 200 else f"{r.status_code} {r.text.strip()[:60]}"


def collect(state_dir: str | Path) -> tuple[list[Probe], list[str]] | None:
    state = load_state(Path(state_dir))
    if state is None:
        return None
    probes: list[Probe] = []
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        rpid = state.router_pid
        probes.append(Probe("router", state.router_url, _get(client, f"{state.router_url}/health"),
                            str(rpid or "-"), bool(rpid and pid_alive(rpid)), state.router_phase))
        for g in state.groups:
            pids = [r.pid for r in g.ranks]
            alive = bool(pids) and all(p is not None and pid_alive(p) for p in pids)
            probes.append(Probe(f"{g.deployment}/{g.group}", g.url, _get(client, f"{g.url}/health"),
                                ",".join(str(p or "-") for p in pids), alive, g.phase))
        # Models from the leaders themselves (with this run's engine token): the router's needs a tenant key.
        models: list[str] = []
        auth = engine_auth_headers(Path(state_dir))
        for g in state.groups:
            try:
                r = client.get(f"{g.url}/v1/models", headers=auth)
                if r.status_code == 200:
                    models += [m.get("id", "?") for m in r.json().get("data", []) if m.get("id") not in models]
            except (httpx.HTTPError, ValueError):
                continue
    if not pid_alive(state.up_pid):
        probes = [Probe(p.name, p.url, p.health, p.pids, p.alive,
                        p.phase if p.phase == "Stopped" else f"{p.phase} (supervisor gone)") for p in probes]
    return probes, models


def show_status(state_dir: str, *, as_json: bool = False) -> int:
    got = collect(state_dir)
    if got is None:
        print(f"no local stack recorded in {state_dir} (start one with `supernode up`)")
        return 1
    probes, models = got
    state = load_state(Path(state_dir))
    scaling = state.autoscaling if state is not None else {}
    if as_json:
        print(json.dumps({"units": [asdict(p) for p in probes], "models": models, "autoscaling": scaling},
                         indent=2))
    else:
        rows = [["UNIT", "URL", "STATE", "HEALTH", "PIDS", "ALIVE"]]
        rows += [[p.name, p.url, p.phase, p.health, p.pids, "yes" if p.alive else "no"] for p in probes]
        print(table(rows))
        print(f"models: {', '.join(models) if models else '(no leader answering /v1/models)'}")
        for name, why in scaling.items():
            print(f"autoscaling {name}: {why.get('active')} groups ({why.get('ready')} ready), "
                  f"{why.get('reason')}: {why.get('message')}")
    return 0 if all(p.health == "200" or p.phase == "Parked" for p in probes) else 1
