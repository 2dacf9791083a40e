#!/usr/bin/env bash
# Set up (idempotently) and run the main job: the whole stack on this machine.
# Usage: bash scripts/up.sh [supernode up args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e '.[engine]'
if [ "$#" -eq 0 ]; then
  set -- examples/local/pro.yaml examples/local/flash.yaml --tenants examples/local/tenants.yaml
fi
exec .venv/bin/supernode up "$@"
