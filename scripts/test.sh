#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite: lint, types, layering, unit, integration, e2e.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch is pinned to 2.13.0 (a CPU build on these machines); a loose pin pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[engine,dev]'
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";         ruff check .
echo "== mypy";         mypy
echo "== import-linter"; lint-imports
echo "== pytest"
pytest -q -p no:cacheprovider "$@"
