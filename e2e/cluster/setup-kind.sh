#!/usr/bin/env bash
# Create a kind cluster for the real-cluster e2e suite: LeaderWorkerSet installed, the Supernode
# images built and loaded. The pytest suite (e2e/cluster/test_cluster_*.py) installs the chart itself.
#
#   e2e/cluster/setup-kind.sh                 # create cluster "supernode-e2e", build + load images
#   e2e/cluster/setup-kind.sh --install       # ... and `helm install` the chart (needs the helm CLI)
#   e2e/cluster/setup-kind.sh --delete        # delete the cluster
#
# Needs: docker (or podman via KIND_EXPERIMENTAL_PROVIDER), kind >= 0.23, kubectl. Env overrides:
#   CLUSTER (supernode-e2e), LWS_VERSION (v0.7.0), TAG (e2e), KUBECONFIG_OUT (.supernode/kind-kubeconfig, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-supernode-e2e}
LWS_VERSION=${LWS_VERSION:-v0.7.0}
TAG=${TAG:-e2e}
KUBECONFIG_OUT=${KUBECONFIG_OUT:-.supernode/kind-kubeconfig}
CONTROL_PLANE_IMAGE=ghcr.io/supernode-io/supernode-control-plane:${TAG}
ENGINE_IMAGE=ghcr.io/supernode-io/supernode-engine-cpu:${TAG}

log() { printf '\n== %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "setup-kind: '$1' is required" >&2; exit 2; }; }

if [ "${1:-}" = "--delete" ]; then
  need kind
  kind delete cluster --name "$CLUSTER"
  rm -f "$KUBECONFIG_OUT"
  exit 0
fi

need kind; need kubectl; need docker

if kind get clusters | grep -qx "$CLUSTER"; then
  log "cluster $CLUSTER exists"
else
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config e2e/cluster/kind-config.yaml --wait 120s
fi
mkdir -p "$(dirname "$KUBECONFIG_OUT")"
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_OUT"
export KUBECONFIG=$PWD/$KUBECONFIG_OUT

log "installing LeaderWorkerSet $LWS_VERSION"
kubectl apply --server-side -f "https://github.com/kubernetes-sigs/lws/releases/download/${LWS_VERSION}/manifests.yaml"
kubectl -n lws-system rollout status deployment/lws-controller-manager --timeout=180s

log "building images ($TAG)"
docker build -f docker/control-plane.Dockerfile -t "$CONTROL_PLANE_IMAGE" .
docker build -f docker/engine-cpu.Dockerfile -t "$ENGINE_IMAGE" .

log "loading images into kind"
kind load docker-image --name "$CLUSTER" "$CONTROL_PLANE_IMAGE" "$ENGINE_IMAGE"

if [ "${1:-}" = "--install" ]; then
  need helm
  log "helm install"
  helm upgrade --install supernode helm/supernode -n supernode-system --create-namespace \
    -f e2e/cluster/values-kind.yaml --wait --timeout 5m
fi

log "ready"
cat <<MSG
Run the suite:
  SUPERNODE_E2E_KUBECONFIG=$KUBECONFIG_OUT SUPERNODE_E2E_ENGINE_IMAGE=$ENGINE_IMAGE \\
    pytest e2e/cluster -m cluster -v
MSG
