"""What `supernode up` prints once the stack serves: a table and ready-to-paste snippets."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

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


def first_api_key(tenants: Path | None) -> str:
    """The first plain key a local tenants file shows in a comment (`api key: sk-...`): the router
    itself only knows digests, so a snippet can only be ready to paste when the file says the key."""
    if tenants is None:
        return "none"
    try:
        m = re.search(r"api key:\s*(\S+)", tenants.read_text())
    except OSError:
        return "YOUR_KEY"
    return m.group(1) if m else "YOUR_KEY"


def snippets(router_url: str, model: str, api_key: str) -> str:
    """Unindented, so a paste runs as is."""
    return f"""\
Try it with curl:

curl -s {router_url}/v1/chat/completions \\
  -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\
  -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], "max_tokens": 32}}'

Or with the OpenAI Python SDK (pip install openai):

python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{router_url}/v1", api_key="{api_key}")
r = client.chat.completions.create(model="{model}", max_tokens=32,
                                   messages=[{{"role": "user", "content": "Hello!"}}])
print(r.choices[0].message.reasoning_content, r.choices[0].message.content)
EOF
"""
