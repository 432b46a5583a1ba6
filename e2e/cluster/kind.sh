#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# NEEDS DOCKER (a running Docker engine, and Docker Hub or a mirror for kind's node image).
# Not usable on the project's own machines, which have no Docker engine: there the suite starts
# its own control plane (cluster.sh). Where Docker exists, this makes a kind cluster for the same
# e2e suite and prints the lines that point the suite at it:
#
#   eval "$(e2e/cluster/kind.sh)"          # create (or reuse) the cluster, export the variables
#   npx vitest run --config e2e/vitest.config.mts
#   e2e/cluster/kind.sh delete             # remove it
#
# kind itself is built from the Go module proxy (sigs.k8s.io/kind) into the same cache as the
# other binaries unless `kind` is already on PATH. KIND_CLUSTER_NAME (default rbinder-e2e) and
# KIND_NODE_IMAGE (default: kind's own default for its version) can be set.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

KIND_VERSION=${KIND_VERSION:-v0.33.0}
name=${KIND_CLUSTER_NAME:-rbinder-e2e}

command -v docker >/dev/null || die "kind.sh needs Docker (docker not found)"
docker info >/dev/null 2>&1 || die "kind.sh needs a running Docker engine (docker info failed)"

kind=$(command -v kind || true)
if [[ -z $kind ]]; then
  kind="$(k8s_cache_root)/kind-$KIND_VERSION/kind"
  if [[ ! -x $kind ]]; then
    log "building kind $KIND_VERSION"
    mkdir -p "$(dirname "$kind")"
    GOFLAGS='' GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$(dirname "$kind")/.tmp-$$" \
      go install -trimpath -ldflags='-s -w' "sigs.k8s.io/kind@$KIND_VERSION" >&2
    mv -f "$(dirname "$kind")/.tmp-$$/kind" "$kind"
    rmdir "$(dirname "$kind")/.tmp-$$"
  fi
fi

if [[ ${1-} == delete ]]; then
  "$kind" delete cluster --name "$name" >&2
  exit 0
fi

if ! "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
  log "creating kind cluster $name"
  "$kind" create cluster --name "$name" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s >&2
fi
kubeconfig="$(k8s_cache_root)/kind-$name.kubeconfig"
mkdir -p "$(dirname "$kubeconfig")"
"$kind" get kubeconfig --name "$name" >"$kubeconfig"
# The `restarts the API server` test: kubelet restarts the static pod once its container is stopped.
restart="docker exec $name-control-plane sh -c 'crictl stop \$(crictl ps -q --name kube-apiserver)'"
printf 'export RBINDER_E2E_KUBECONFIG=%q\n' "$kubeconfig"
printf 'export RBINDER_E2E_RESTART_APISERVER=%q\n' "$restart"
