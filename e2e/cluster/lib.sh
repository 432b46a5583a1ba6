# shellcheck source-path=SCRIPTDIR
# shellcheck shell=bash disable=SC2034
# Shared by build.sh and cluster.sh (sourced, not run).

# shellcheck source=versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

# Built binaries live outside the repo, one directory per component and version:
#   $RBINDER_K8S_CACHE (default ~/.cache/rbinder/k8s)/{kubernetes-v1.37.2,etcd-v3.7.3,helm-v3.22.0}/
k8s_cache_root() {
  echo "${RBINDER_K8S_CACHE:-$HOME/.cache/rbinder/k8s}"
}

# The cached path of a component's binary (which may not exist yet).
bin_path() {
  local root
  root=$(k8s_cache_root)
  case "$1" in
    etcd) echo "$root/etcd-$ETCD_VERSION/etcd" ;;
    kube-apiserver | kube-controller-manager) echo "$root/kubernetes-$K8S_VERSION/$1" ;;
    helm) echo "$root/helm-$HELM_VERSION/helm" ;;
    *) echo "unknown component: $1" >&2; return 1 ;;
  esac
}

ALL_COMPONENTS=(etcd kube-apiserver kube-controller-manager helm)

log() {
  echo "[rbinder-cluster] $*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# 125 -> 2m05s
fmt_secs() {
  printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
}
