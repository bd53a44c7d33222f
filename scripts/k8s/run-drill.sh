#!/usr/bin/env bash
# The whole Kubernetes drill as scripts/test.sh runs it: start the cluster
# (scripts/k8s/up.sh), build the images (scripts/images.sh, BASE=scratch),
# import them, run scripts/k8s/drill.sh, and always tear down
# (scripts/k8s/down.sh), whatever failed, also on SIGTERM or Ctrl-C. Exits
# with the drill's status, or non-zero when the teardown left something
# behind. LC_K8S_IMAGES_BUILT=1: the images of $VERSION are already in
# Docker (scripts/test.sh builds them once for every step); skip the build.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$K8S_ROOT"
export VERSION=${VERSION:-$(git describe --tags --always --dirty)}
checks=""
teardown() {
  local st=$?
  [ -z "$checks" ] || kill "$checks" 2>/dev/null || true
  scripts/k8s/down.sh || st=1
  exit "$st"
}
trap teardown EXIT
# A bare SIGTERM would end bash without its EXIT trap: exit, and so tear down.
trap 'exit 143' TERM
trap 'exit 130' INT
s=$(date +%s)
# The drill's own helpers live outside go.work: check them here, while the
# cluster starts.
check_helpers() {
  local m
  for m in drillplay pause; do
    (cd scripts/k8s/$m && test -z "$(gofmt -l .)" && GOWORK=off go vet . && GOWORK=off go test -count=1 . >/dev/null) ||
      { echo "k8s: scripts/k8s/$m: gofmt, vet or tests failed" >&2; return 1; }
  done
}
check_helpers &
checks=$!
scripts/k8s/up.sh
wait "$checks" || k8s_die "the drill's helpers failed their checks (above)"
checks=""
[ -n "${LC_K8S_IMAGES_BUILT:-}" ] || BASE=${BASE:-scratch} scripts/images.sh
scripts/k8s/load-images.sh "livecluster/ocm:$VERSION" "livecluster/origin:$VERSION" \
  "livecluster/edge:$VERSION" "livecluster/etcd:$VERSION"
scripts/k8s/drill.sh
echo "k8s: drill passed in $(( $(date +%s) - s )) s (cluster, images and drill)" >&2
