#!/usr/bin/env python3
"""Write the values table of helm/supernode/README.md from values.yaml (its `# --` comments are the
descriptions), between the `<!-- values:start -->` / `<!-- values:end -->` markers.

Usage: python scripts/chart-values-doc.py [--check]   (--check: exit 1 when the README is stale)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CHART = Path(__file__).resolve().parents[1] / "helm" / "supernode"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?: (?P<value>.*))?$")


def rows(values_yaml: str) -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf, in file order."""
    out: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in values_yaml.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending:
                pending.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [match["key"]])
        value = (match["value"] or "").split(" #")[0].strip()
        if value:
            out.append((path, value, " ".join(pending)))
        else:
            stack.append((indent, match["key"]))
            if pending:
                out.append((path, "", " ".join(pending)))
        pending = []
    return out


def table(values_yaml: str) -> str:
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    for key, default, desc in rows(values_yaml):
        shown = (f"`{default}`" if default else "").replace("|", r"\|")
        text = desc.replace("|", r"\|")
        lines.append(f"| `{key}` | {shown} | {text} |")
    return "\n".join(lines)


def render(readme: str, values_yaml: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(values_yaml)}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    fresh = render(readme, (CHART / "values.yaml").read_text())
    if "--check" in argv:
        if fresh != readme:
            print(f"{readme_path} values table is stale; run python scripts/chart-values-doc.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(fresh)
    print(f"wrote {readme_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
