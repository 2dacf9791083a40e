"""What `supernode up` prints once the stack serves: a table and ready-to-paste snippets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from supernode.cli.local.statefile import LocalState


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def stack_table(state: LocalState) -> str:
    rows = [["DEPLOYMENT", "GROUP", "RANKS", "PID", "PORT", "STATE", "RESTARTS"]]
    for g in state.groups:
        pids = ",".join(str(r.pid) if r.pid else "-" for r in g.ranks)
        rows.append([g.deployment, str(g.group), str(len(g.ranks)), pids, g.url.rsplit(":", 1)[-1],
                     g.phase, str(g.restarts)])
    rows.append(["(router)", "-", "1", str(state.router_pid or "-"), state.router_url.rsplit(":", 1)[-1],
                 state.router_phase, str(state.router_restarts)])
    return table(rows)


def _find_key(node: Any) -> str | None:
    """The first API key in a tenants document, whatever its exact nesting."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("key", "apiKey", "api_key") and isinstance(v, str):
                return v
            if k in ("keys", "apiKeys", "api_keys") and isinstance(v, list) and v:
                first = v[0]
                if isinstance(first, str):
                    return first
                found = _find_key(first)
                if found:
                    return found
        for v in node.values():
            found = _find_key(v)
            if found:
                return found
    elif isinstance(node, list):
        for v in node:
            found = _find_key(v)
            if found:
                return found
    return None


def first_api_key(tenants: Path | None) -> str:
    if tenants is None:
        return "none"
    try:
        return _find_key(yaml.safe_load(tenants.read_text())) or "YOUR_KEY"
    except (OSError, yaml.YAMLError):
        return "YOUR_KEY"


def snippets(router_url: str, model: str, api_key: str) -> str:
    return f"""\
Try it:

  curl -s {router_url}/v1/chat/completions \\
    -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], "max_tokens": 32}}'

  python - <<'EOF'
  from openai import OpenAI
  client = OpenAI(base_url="{router_url}/v1", api_key="{api_key}")
  r = client.chat.completions.create(model="{model}", max_tokens=32,
                                     messages=[{{"role": "user", "content": "Hello!"}}])
  print(r.choices[0].message.content)
  EOF
"""
