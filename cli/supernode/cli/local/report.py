"""What `supernode up` prints once the stack serves: a table and ready-to-paste snippets."""

from __future__ import annotations

from collections.abc import Sequence

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


API_KEY_ENV = "SUPERNODE_API_KEY"  # the snippets read the caller's key from here: keys are never printed


def snippets(router_url: str, model: str, *, with_key: bool) -> str:
    """Unindented, so a paste runs as is. With tenants, the key comes from $SUPERNODE_API_KEY (a key of
    the tenants file, which this never prints); without, any key does (authentication is off)."""
    key = f"${API_KEY_ENV}" if with_key else "none"
    py_key = f'os.environ["{API_KEY_ENV}"]' if with_key else '"none"'
    hint = f"First: export {API_KEY_ENV}=<one of your tenants' API keys>\n\n" if with_key else ""
    return f"""\
{hint}Try it with curl:

curl -s {router_url}/v1/chat/completions \\
  -H "Authorization: Bearer {key}" -H 'Content-Type: application/json' \\
  -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], "max_tokens": 32}}'

Or with the OpenAI Python SDK (pip install openai):

python - <<'EOF'
import os
from openai import OpenAI
client = OpenAI(base_url="{router_url}/v1", api_key={py_key})
r = client.chat.completions.create(model="{model}", max_tokens=32,
                                   messages=[{{"role": "user", "content": "Hello!"}}])
print(r.choices[0].message.reasoning_content, r.choices[0].message.content)
EOF
"""
