#!/usr/bin/env bash
# Regenerate the CRDs from the API models into both places they ship: crds/ (kubectl apply -f crds/)
# and the Helm chart's crds/ (helm install). One source: supernode.api.crdgen.
# Usage: scripts/sync-chart-crds.sh          write both copies
#        scripts/sync-chart-crds.sh --check  exit 1 if either copy is stale (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/crds:$PWD/operator:$PWD/engine:$PWD/router:$PWD/cli${PYTHONPATH:+:$PYTHONPATH}"
mode=()
if [ "${1:-}" = "--check" ]; then mode=(--check); fi
status=0
for target in crds/modeldeployment.yaml helm/supernode/crds/modeldeployment.yaml; do
  "$PY" -m supernode.cli crds "${mode[@]}" -o "$target" || status=1
done
exit $status
