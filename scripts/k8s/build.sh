#!/usr/bin/env bash
# Builds, once per version, every binary the single-node Kubernetes of
# scripts/k8s/up.sh needs, from the Go module proxy only (nothing else can be
# downloaded here): kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kube-proxy, kubectl; etcd for the control plane; CoreDNS with only
# the plugins the cluster uses; crictl; helm. Cached under
# $LIVECLUSTER_K8S_CACHE/<name>@<version>/ (default ~/.cache/livecluster/k8s),
# so a second run costs nothing. Cold on 2 cores it takes about 30 minutes.
#
#   scripts/k8s/build.sh            everything
#   scripts/k8s/build.sh helm       only the named parts (helm kubernetes etcd coredns crictl)
#
# Prints nothing but progress on stderr; `scripts/k8s/build.sh --print-dirs`
# prints the cache directories of every part, one per line, for PATH.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.4}
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE=${LIVECLUSTER_K8S_CACHE:-$HOME/.cache/livecluster/k8s}

dir_of() { # part
  case $1 in
    kubernetes) echo "$CACHE/kubernetes@$K8S_VERSION" ;;
    etcd) echo "$CACHE/etcd@$ETCD_VERSION" ;;
    coredns) echo "$CACHE/coredns@$COREDNS_VERSION" ;;
    crictl) echo "$CACHE/crictl@$CRICTL_VERSION" ;;
    helm) echo "$CACHE/helm@$HELM_VERSION" ;;
    *) echo "unknown part $1" >&2; return 2 ;;
  esac
}

ALL=(helm kubernetes etcd coredns crictl)
if [ "${1:-}" = "--print-dirs" ]; then
  for p in "${ALL[@]}"; do dir_of "$p"; done
  exit 0
fi
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=("${ALL[@]}")

log() { echo "k8s-build: $*" >&2; }

# Builds in a scratch directory and moves the result into place only when
# every binary is there, so an interrupted build never looks cached.
finish() { # part tmpdir
  local d; d=$(dir_of "$1")
  rm -rf "$d"; mkdir -p "$(dirname "$d")"; mv "$2/out" "$d"; rm -rf "$2"
  log "$1 ready in $d"
}

build_helm() {
  local t; t=$(mktemp -d); mkdir -p "$t/out"
  (cd / && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$t/out" \
    go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  finish helm "$t"
}

build_crictl() {
  local t; t=$(mktemp -d); mkdir -p "$t/out"
  (cd / && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$t/out" \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION")
  finish crictl "$t"
}

build_etcd() {
  local t; t=$(mktemp -d); mkdir -p "$t/out" "$t/src"
  cat >"$t/src/main.go" <<'GO'
// Command etcd is the etcd server, built from its Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$t/src" && export GOWORK=off GOFLAGS=-mod=mod &&
    go mod init lcbuild/etcd >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null &&
    go mod tidy >/dev/null &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$t/out/etcd" .)
  finish etcd "$t"
}

build_coredns() {
  local t; t=$(mktemp -d); mkdir -p "$t/out" "$t/src"
  # Only the plugins the cluster's Corefile uses; no forward: nothing may
  # leave the machine.
  cat >"$t/src/main.go" <<'GO'
// Command coredns is CoreDNS with only the plugins a test cluster needs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// The directive order decides the plugin chain; keep CoreDNS's own order.
var _ = dnsserver.Directives

func main() { coremain.Run() }
GO
  (cd "$t/src" && export GOWORK=off GOFLAGS=-mod=mod &&
    go mod init lcbuild/coredns >/dev/null 2>&1 &&
    go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null &&
    go mod tidy >/dev/null &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$t/out/coredns" .)
  finish coredns "$t"
}

build_kubernetes() {
  local t; t=$(mktemp -d); mkdir -p "$t/out" "$t/src"
  # `go install k8s.io/kubernetes/cmd/...` is refused because kubernetes'
  # go.mod replaces its staging modules with local paths. A scratch module
  # that replaces each of them with the published version works.
  local gomod
  gomod=$(cd / && GOWORK=off GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  [ -f "$gomod" ] || { log "cannot read kubernetes' go.mod"; return 1; }
  local staging="v0.${K8S_VERSION#v1.}"
  {
    echo "module lcbuild/kubernetes"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" |
      awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >"$t/src/go.mod"
  cat >"$t/src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  local minor=${K8S_VERSION#v1.} p; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  (cd "$t/src" && export GOWORK=off GOFLAGS=-mod=mod &&
    go mod tidy >/dev/null &&
    CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$t/out/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  finish kubernetes "$t"
}

for p in "${PARTS[@]}"; do
  d=$(dir_of "$p")
  if [ -d "$d" ]; then continue; fi
  log "building $p (cold: helm ~5 min, kubernetes ~20 min, coredns ~4, crictl ~3, etcd ~2)"
  s=$(date +%s)
  "build_$p"
  log "$p took $(( $(date +%s) - s )) s"
done
