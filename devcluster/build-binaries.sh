#!/usr/bin/env bash
# Builds the pinned control-plane binaries from the Go module proxy, once, into a cache
# outside the repository. A second run finds every binary in place and does nothing.
#
#   AUDIOJOB_CACHE        cache root (default ~/.cache/audiojob-operator)
#   AUDIOJOB_TEST_ASSETS  a directory that already holds the binaries: nothing is built,
#                         the directory is only checked (like envtest's KUBEBUILDER_ASSETS)
#
# With --node it also makes what the real node needs (devcluster/node/): containerd, runc and
# iptables from apt when missing, the kubelet, the CNI plugins and the static pause program.
set -euo pipefail
NODE=0
[[ ${1:-} == --node ]] && NODE=1

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4
# CRDs only (the chart's ScaledObject and ServiceMonitor are validated against them).
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CNI_VERSION=v1.10.0
# Builds the project's image from its Dockerfile (make image).
BUILDKIT_VERSION=v0.34.2
# Prometheus 3.16.0 (its Go module is tagged v0.<major><minor>.<patch>) and promtool: the
# e2e test scrapes the controller with it and evaluates every dashboard and alert expression.
PROMETHEUS_VERSION=v0.316.0 PROMETHEUS_RELEASE=3.16.0
# The release path (make release, tests/realnode/test_release.py): CNCF distribution's OCI
# registry; helm-docs writes the chart's README from values.yaml; actionlint checks the
# release workflow, which cannot run here.
REGISTRY_VERSION=v3.1.2
HELM_DOCS_VERSION=v1.14.2
ACTIONLINT_VERSION=v1.7.12

CACHE=${AUDIOJOB_CACHE:-$HOME/.cache/audiojob-operator}
BIN=$CACHE/bin
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_BINS=("${K8S_BINS[@]}" etcd kwok helm keda-operator buildkitd buildctl prometheus promtool registry helm-docs actionlint)
# The real node's: the kubelet, and the CNI plugins its pod network uses (no portmap: pods here
# have no host ports, and each plugin left out is host state that cannot leak).
CNI_PLUGINS=(bridge host-local loopback)
NODE_BINS=(kubelet "${CNI_PLUGINS[@]/#/cni/}" pause)
PAUSE_SRC=$(cd "$(dirname "$0")" && pwd)/node/pause.c

# Real CRDs from the Go module proxy, for server-side validation of what the chart renders.
fetch_crds() {
  local crds=$CACHE/crds
  # The stamp names the files too, so a cache made before a CRD was added is fetched anew.
  local want="$KEDA_VERSION $PROMETHEUS_OPERATOR_VERSION servicemonitors prometheusrules"
  [[ -f $crds/.version && "$(cat "$crds/.version")" == "$want" ]] && return
  local t0=$SECONDS keda prom
  echo "==> CRDs: KEDA $KEDA_VERSION, prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
  keda=$(GOTOOLCHAIN=local GOFLAGS= go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  prom=$(GOTOOLCHAIN=local GOFLAGS= go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$crds" && mkdir -p "$crds"
  cp "$keda"/config/crd/bases/keda.sh_*.yaml "$crds/"
  cp "$prom"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,prometheusrules}.yaml "$crds/"
  chmod u+w "$crds"/*.yaml
  echo "$want" > "$crds/.version"
  echo "    CRDs took $((SECONDS - t0))s"
}
mkdir -p "$CACHE"
fetch_crds

if [[ -n ${AUDIOJOB_TEST_ASSETS:-} ]]; then
  (( NODE )) && ALL_BINS+=("${NODE_BINS[@]}")
  for b in "${ALL_BINS[@]}"; do
    [[ -x $AUDIOJOB_TEST_ASSETS/$b ]] || { echo "AUDIOJOB_TEST_ASSETS=$AUDIOJOB_TEST_ASSETS has no executable $b" >&2; exit 1; }
  done
  echo "using binaries from AUDIOJOB_TEST_ASSETS=$AUDIOJOB_TEST_ASSETS"
  exit 0
fi

# A downloaded toolchain is a binary download, which this network refuses; the
# machine's Go (1.26) is new enough for every pin above.
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$BIN" "$CACHE/src"

step() { # step NAME CMD...: run CMD, print how long it took
  local name=$1; shift
  local t0=$SECONDS
  echo "==> $name"
  "$@"
  echo "    $name took $((SECONDS - t0))s"
}

# A stamp sits beside its binary: BIN/.kubelet.version, BIN/cni/.bridge.version.
stamp_file() { echo "$BIN/$(dirname "$1")/.$(basename "$1").version"; }

have() { # have VERSION BIN...: true when every BIN exists and was built for VERSION
  local version=$1; shift
  for b in "$@"; do
    [[ -x $BIN/$b && "$(cat "$(stamp_file "$b")" 2>/dev/null)" == "$version" ]] || return 1
  done
}

stamp() { local version=$1; shift; for b in "$@"; do echo "$version" > "$(stamp_file "$b")"; done; }

build_kubernetes() {
  local w=$CACHE/src/k8s-$K8S_VERSION staging=v0.${K8S_VERSION#v1.}
  mkdir -p "$w"; cd "$w"
  if [[ ! -f go.mod ]]; then
    go mod init local/k8sbuild >/dev/null 2>&1
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
    # local paths, which a dependency's go.mod cannot do: point each at its published tag.
    local gomod mods
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    mods=$(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/k8s.io/.*|\1|p' "$gomod")
    for m in $mods; do go mod edit -replace="$m=$m@$staging"; done
    go mod edit -godebug=default=go1.24
    go get "k8s.io/kubernetes@$K8S_VERSION"
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    go mod tidy
  fi
  local bins=("$@")
  local minor; minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  local v="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  v="$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  v="$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  v="$v -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitTreeState=clean"
  v="$v -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  for c in "${bins[@]}"; do
    step "go build $c $K8S_VERSION" go build -trimpath -ldflags "-s -w $v" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$BIN/$c.tmp" "$BIN/$c"
  done
  stamp "$K8S_VERSION" "${bins[@]}"
}

build_etcd() {
  local w=$CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$w"; cd "$w"
  if [[ ! -f go.mod ]]; then
    go mod init local/etcdbuild >/dev/null 2>&1
    # etcd's server/go.mod replaces its sibling modules with local paths; as a dependency
    # those replaces are ignored and the published sibling versions are used instead.
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go mod tidy
  fi
  step "go build etcd $ETCD_VERSION" go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  stamp "$ETCD_VERSION" etcd
}

build_in_module_copy() { # NAME MODULE VERSION LDFLAGS BIN=PKG...: go build each PKG as BIN
  # Modules with replace or exclude directives (KEDA, BuildKit) are refused by `go install
  # pkg@version`; building inside a copy of the module honours them.
  local name=$1 module=$2 version=$3 ldflags=$4; shift 4
  local src=$CACHE/src/$name-$version dir b
  if [[ ! -f $src/go.mod ]]; then
    dir=$(GOFLAGS= go mod download -json "$module@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
  fi
  cd "$src"
  for b in "$@"; do
    step "go build ${b%%=*} $version" env GOFLAGS= go build -trimpath -ldflags "-s -w $ldflags" \
      -o "$BIN/${b%%=*}.tmp" "${b#*=}"
    mv "$BIN/${b%%=*}.tmp" "$BIN/${b%%=*}"
    stamp "$version" "${b%%=*}"
  done
}

build_go_install() { # NAME MODULE/PATH VERSION LDFLAGS
  local name=$1 pkg=$2 version=$3 ldflags=${4:-}
  step "go install $name $version" env GOBIN="$BIN/$(dirname "$name")" go install -trimpath -ldflags "-s -w $ldflags" "$pkg@$version"
  stamp "$version" "$name"
}

build_prometheus() {
  local c
  for c in prometheus promtool; do
    step "go install $c $PROMETHEUS_VERSION" env GOBIN="$BIN" go install -trimpath -tags remove_all_sd \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE" \
      "github.com/prometheus/prometheus/cmd/$c@$PROMETHEUS_VERSION"
  done
  stamp "$PROMETHEUS_VERSION" prometheus promtool
}

t_all=$SECONDS
have "$K8S_VERSION" "${K8S_BINS[@]}" || build_kubernetes "${K8S_BINS[@]}"
have "$ETCD_VERSION" etcd || build_etcd
have "$KWOK_VERSION" kwok || build_go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
have "$HELM_VERSION" helm || build_go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
have "$KEDA_VERSION" keda-operator || build_in_module_copy keda github.com/kedacore/keda/v2 "$KEDA_VERSION" \
  "-X=github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION" keda-operator=./cmd/operator
have "$BUILDKIT_VERSION" buildkitd buildctl || build_in_module_copy buildkit github.com/moby/buildkit \
  "$BUILDKIT_VERSION" "-X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION" \
  buildkitd=./cmd/buildkitd buildctl=./cmd/buildctl
# Only static scrape configs are used: remove_all_sd leaves out every service-discovery plugin
# (cloud SDKs), and without builtinassets the web UI is not embedded (the tests use the API).
have "$PROMETHEUS_VERSION" prometheus promtool || build_prometheus
have "$REGISTRY_VERSION" registry || build_go_install registry \
  github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION" \
  "-X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION"
have "$HELM_DOCS_VERSION" helm-docs || build_go_install helm-docs \
  github.com/norwoodj/helm-docs/cmd/helm-docs "$HELM_DOCS_VERSION"
have "$ACTIONLINT_VERSION" actionlint || build_go_install actionlint \
  github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"

# -- the real node -------------------------------------------------------------------------
node_packages() {
  local missing=()
  for c in containerd runc iptables; do command -v "$c" >/dev/null || missing+=("$c"); done
  (( ${#missing[@]} )) || return 0
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

build_cni() {
  mkdir -p "$BIN/cni"
  local p
  for p in "${CNI_PLUGINS[@]}"; do
    local kind=main; [[ $p == host-local ]] && kind=ipam
    build_go_install "cni/$p" "github.com/containernetworking/plugins/plugins/$kind/$p" "$CNI_VERSION"
  done
}

build_pause() {
  # A static program, so the pause image is one file and needs no base image from a registry.
  local version; version=$(sha256sum "$PAUSE_SRC" | cut -c1-16)
  have "$version" pause && return
  step "gcc pause" gcc -static -Os -s -o "$BIN/pause.tmp" "$PAUSE_SRC"
  mv "$BIN/pause.tmp" "$BIN/pause"
  stamp "$version" pause
}

if (( NODE )); then
  node_packages
  have "$K8S_VERSION" kubelet || build_kubernetes kubelet
  have "$CNI_VERSION" "${CNI_PLUGINS[@]/#/cni/}" || build_cni
  build_pause
fi
echo "binaries ready in $BIN ($((SECONDS - t_all))s)"
