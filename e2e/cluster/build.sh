#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds the pinned control-plane binaries from the Go module proxy, once per machine.
#
#   e2e/cluster/build.sh [COMPONENT...]   build what is missing (default: all) -> cache
#   e2e/cluster/build.sh --paths          print NAME=PATH for every component (built or not)
#
# COMPONENT: etcd kube-apiserver kube-controller-manager helm. Versions: versions.sh.
# A binary already in the cache is reused at once. Each build happens in a throw-away wrapper
# module (outside the repo) that requires the pinned module, writes to a temporary name and is
# renamed into place; a lock file makes a second concurrent run wait for the first instead of
# building the same thing twice (and the rename keeps it safe even without the lock).
# Progress goes to stderr every 30 s; the full `go build -v` output to <binary>.log.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if [[ ${1-} == --paths ]]; then
  for c in "${ALL_COMPONENTS[@]}"; do echo "$c=$(bin_path "$c")"; done
  exit 0
fi

command -v go >/dev/null || die "go is not installed"
# Use the machine's Go, never download a toolchain; resolve modules as needed in the wrapper
# modules; static binaries (no cgo) like the official release builds.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
export CGO_ENABLED=0

# The `go.mod` of the wrapper module that builds a component.
wrapper_gomod() {
  local c=$1
  echo "module rbinder.local/e2e-build/$c"
  echo
  echo "go 1.26"
  echo
  case "$c" in
    etcd) echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" ;;
    helm) echo "require helm.sh/helm/v3 $HELM_VERSION" ;;
    kube-*)
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      kubernetes_replaces
      ;;
  esac
}

# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
# ./staging/src/k8s.io/X, which a module download does not contain. Each is published on its own
# as k8s.io/X v0.<minor>.<patch>: turn every such replace into one pinned to that version and keep
# any other replace as it is.
kubernetes_replaces() {
  local gomod staging_version
  gomod=$(cd / && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
  staging_version="v0.${K8S_VERSION#v1.}"
  echo "replace ("
  awk -v v="$staging_version" '
    /^replace *\(/ { inblock = 1; next }
    inblock && /^\)/ { inblock = 0; next }
    inblock && NF >= 3 && $2 == "=>" {
      if ($3 ~ /^\.\/staging\//) print "\t" $1 " => " $1 " " v
      else print "\t" $0
    }
    /^replace [^(]/ { sub(/^replace /, ""); if ($3 !~ /^\.\//) print "\t" $0 }
  ' "$gomod"
  echo ")"
}

version_of() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    kube-*) echo "$K8S_VERSION" ;;
  esac
}

main_package() {
  case "$1" in
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    helm) echo helm.sh/helm/v3/cmd/helm ;;
    kube-*) echo "k8s.io/kubernetes/cmd/$1" ;;
  esac
}

# -s -w: no symbol table or DWARF (about a third smaller); plus the version stamps the official
# builds set (Kubernetes: hack/lib/version.sh; helm: its Makefile).
ldflags() {
  local c=$1 flags="-s -w"
  case "$c" in
    kube-*)
      local minor=${K8S_VERSION#v1.}
      minor=${minor%%.*}
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
      done
      ;;
    helm)
      # helm's idea of the newest Kubernetes (for .Capabilities and lint) follows its client-go.
      local cg
      cg=$(go list -m -f '{{.Version}}' k8s.io/client-go) # v0.37.0
      cg=${cg#v0.}
      flags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${cg%%.*}"
      flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${cg%%.*}"
      ;;
  esac
  echo "$flags"
}

# Reads `go build -v` output: appends it to $1 and prints a progress line every 30 s.
progress() {
  local logfile=$1 what=$2 started=$3 n=0 last=$SECONDS line
  while IFS= read -r line; do
    echo "$line" >>"$logfile"
    n=$((n + 1))
    if ((SECONDS - last >= 30)); then
      last=$SECONDS
      log "$what: still building, $(fmt_secs $((SECONDS - started))) so far, $n packages/modules done (last: ${line:0:80})"
    fi
  done
}

build_one() {
  local c=$1 out dir lockfd work tmp started secs size
  out=$(bin_path "$c")
  [[ -x $out ]] && return 0 # cached
  dir=$(dirname "$out")
  mkdir -p "$dir"
  exec {lockfd}>"$out.lock"
  if ! flock -n "$lockfd"; then
    log "$c: another run is building it; waiting"
    flock "$lockfd"
  fi
  if [[ -x $out ]]; then
    log "$c: cached $out (built by the other run)"
    exec {lockfd}>&-
    return 0
  fi

  work=$(mktemp -d "$(k8s_cache_root)/.work-$c-XXXXXX")
  tmp="$out.tmp-$$"
  # shellcheck disable=SC2064
  trap "rm -rf '$work' '$tmp'" EXIT
  started=$SECONDS
  log "$c: building $(main_package "$c") $(version_of "$c") with $(go env GOVERSION) (cold: a few minutes on 2 cores, see docs/e2e.md)"
  : >"$out.log"
  (
    cd "$work"
    wrapper_gomod "$c" >go.mod.new
    mv go.mod.new go.mod
    cp go.mod "$out.go.mod" # kept for reference next to the binary
    go build -v -trimpath -ldflags "$(ldflags "$c")" -o "$tmp" "$(main_package "$c")"
  ) 2>&1 | progress "$out.log" "$c" "$started" || {
    tail -n 40 "$out.log" >&2
    die "$c: go build failed (full output: $out.log)"
  }
  mv -f "$tmp" "$out"
  secs=$((SECONDS - started))
  size=$(stat -c %s "$out")
  {
    echo "component=$c"
    echo "package=$(main_package "$c")"
    echo "go=$(go env GOVERSION)"
    echo "build_seconds=$secs"
    echo "size_bytes=$size"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$out.buildinfo"
  rm -rf "$work"
  trap - EXIT
  exec {lockfd}>&-
  log "$c: built in $(fmt_secs "$secs"), $((size / 1024 / 1024)) MiB -> $out"
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=("${ALL_COMPONENTS[@]}")
total_started=$SECONDS
for c in "${components[@]}"; do
  bin_path "$c" >/dev/null || exit 2
  build_one "$c"
done
if ((SECONDS - total_started > 5)); then log "all built in $(fmt_secs $((SECONDS - total_started)))"; fi
