# shellcheck shell=bash disable=SC2034
# Pinned versions of the control-plane binaries the e2e suite builds (sourced by the scripts here).
# Changing one is enough: the cache is keyed by component and version, so the next run builds it.
# Each must be served by the Go module proxy and build with the machine's Go (go1.26, GOTOOLCHAIN=local).

# k8s.io/kubernetes: kube-apiserver, kube-controller-manager. Its staging modules (k8s.io/api,
# k8s.io/apimachinery, k8s.io/client-go, ...) are published as v0.<minor>.<patch>.
K8S_VERSION=v1.37.2
# go.etcd.io/etcd/server/v3: the etcd server (Kubernetes 1.37 is tested with etcd 3.7.x).
ETCD_VERSION=v3.7.3
# helm.sh/helm/v3: the helm CLI, for installing the chart in e2e tests.
HELM_VERSION=v3.22.0
