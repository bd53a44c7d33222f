#!/usr/bin/env bash
# Builds the cluster's own images with Docker (nothing can be pulled here)
# and imports them into the cluster's containerd: the pod sandbox
# registry.k8s.io/pause:3.10 (scripts/k8s/pause, a static Go program) and
# lck8s/coredns (FROM scratch with the cached CoreDNS binary). Tags that did
# not exist in Docker before are listed in $STATE/images/created, so
# down.sh removes exactly those. Run by up.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
k8s_bin_path
PAUSE=registry.k8s.io/pause:3.10
coredns_dir=$("$K8S_ROOT/scripts/k8s/build.sh" --print-dirs | grep '/coredns@')
COREDNS=lck8s/coredns:${coredns_dir##*@}
mkdir -p "$STATE/images"
echo "$COREDNS" >"$STATE/images/coredns"
touch "$STATE/images/created"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# build TAG: docker build of $ctx; records the tag when it is new to Docker.
build() {
  local existed=0
  docker image inspect "$1" >/dev/null 2>&1 && existed=1
  docker build -q -t "$1" "$ctx" >/dev/null 2>"$ctx/build.err" || { cat "$ctx/build.err" >&2; return 1; }
  if [ $existed = 0 ] && ! grep -qx "$1" "$STATE/images/created"; then
    echo "$1" >>"$STATE/images/created"
  fi
}

k8s_log "images: $PAUSE, $COREDNS"
(cd "$K8S_ROOT/scripts/k8s/pause" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$ctx/pause" .)
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
build "$PAUSE"
rm -f "$ctx/pause"
cp "$coredns_dir/coredns" "$ctx/coredns"
printf 'FROM scratch\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' >"$ctx/Dockerfile"
build "$COREDNS"
docker save "$PAUSE" "$COREDNS" | ctr -a "$CTRD_SOCK" -n k8s.io images import - >/dev/null
