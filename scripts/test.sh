#!/usr/bin/env bash
# Runs every check and test of the repository on a fresh Debian machine with
# Go: installs what the tests need (pinned Go tools through the module proxy,
# ffmpeg from Debian), then lint, generated-code check, gofmt, vet,
# staticcheck and `go test -race` in every module.
#
#   scripts/test.sh            everything
#   SHORT=1 scripts/test.sh    skip the slow multi-process tests (-short), the
#                              local-cluster end-to-end, the image tests, the
#                              container drills and the Kubernetes drill
#   LC_SKIP_K8S=1 scripts/test.sh   skip only the Kubernetes drill
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/tools.sh

MODULES=()
# Every module of the workspace, read from go.work, so a new module is
# checked without editing this script.
for m in $(go work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p'); do
  # A module with no Go code yet has nothing to vet or test.
  [ -n "$(find "$m" -name '*.go' -print -quit)" ] && MODULES+=("$m")
done
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start ))s)"; }

step "installing tools"
tools_install
debian_install ffmpeg ca-certificates curl tmux
export LIVECLUSTER_GRPCURL=$(command -v grpcurl)
export LIVECLUSTER_FFMPEG=$(command -v ffmpeg)
export LIVECLUSTER_FFPROBE=$(command -v ffprobe)

step "buf lint"
buf lint

step "generated code is current"
buf generate
if ! git diff --exit-code -- proto/; then
  echo "generated code in proto/ is stale: run scripts/gen.sh and commit" >&2
  exit 1
fi
if [ -n "$(git status --porcelain --untracked-files=all -- proto/)" ]; then
  git status --porcelain --untracked-files=all -- proto/
  echo "buf generate made files that are not committed: run scripts/gen.sh and commit" >&2
  exit 1
fi

step "gofmt"
bad=$(gofmt -l "${MODULES[@]}")
if [ -n "$bad" ]; then
  echo "not gofmt-ed:" >&2; echo "$bad" >&2; exit 1
fi

step "go vet"
for m in "${MODULES[@]}"; do (cd "$m" && go vet ./...); done

step "staticcheck"
for m in "${MODULES[@]}"; do (cd "$m" && staticcheck ./...); done

step "helm chart: lint, render with each values file, asserts"
scripts/test-chart.sh
# The chart's Go asserts run again below with the other modules.
export LIVECLUSTER_HELM="$(scripts/k8s/build.sh --print-dirs | grep '/helm@')/helm"

short=()
[ -n "${SHORT:-}" ] && short=(-short)
step "go test -race"
for m in "${MODULES[@]}"; do
  (cd "$m" && go test -race -count=1 -timeout 15m "${short[@]}" ./...)
done

if [ -z "${SHORT:-}" ]; then
  # Each target a few seconds (FUZZTIME); the seeds and corpora already ran
  # as plain tests above.
  step "fuzz targets (scripts/fuzz.sh, ${FUZZTIME:-3s} each)"
  scripts/fuzz.sh
fi

if [ -z "${SHORT:-}" ]; then
  step "the README's local cluster, end to end"
  scripts/e2e-local-cluster.sh
fi

if [ -z "${SHORT:-}" ]; then
  step "container images and the compose cluster (skips without Docker)"
  scripts/test-images.sh
fi

# The short form of the failure drills (docs/operations.md, "Drills") on
# the images test-images.sh just built (same $VERSION, so the same tag).
if [ -z "${SHORT:-}" ]; then
  step "failure drills, short form (scripts/drills/run.sh --short; skips without Docker)"
  scripts/drills/run.sh --short origin-crash partition hls-continuity lb-checks ocm-failover etcd-quorum
fi

# The Kubernetes drill (scripts/k8s/, docs/kubernetes.md): a real
# single-node cluster, the images, the chart and the seven drill steps.
# Cold, the Kubernetes toolchain build adds about 30 minutes once.
if [ -n "${SHORT:-}" ]; then
  step "Kubernetes drill: SKIPPED (SHORT=1)"
elif [ -n "${LC_SKIP_K8S:-}" ]; then
  step "Kubernetes drill: SKIPPED (LC_SKIP_K8S=1)"
elif why=$(. scripts/k8s/lib.sh && k8s_cannot_run); then
  step "Kubernetes drill: SKIPPED: this machine cannot run it: $why"
else
  step "Kubernetes drill (scripts/k8s/run-drill.sh)"
  scripts/k8s/run-drill.sh
fi

step "all checks passed"
