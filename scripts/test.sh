#!/usr/bin/env bash
# Runs every check and test of the repository on a fresh Debian machine with
# Go: installs what the tests need (pinned Go tools through the module proxy,
# ffmpeg from Debian), then lint, generated-code check, gofmt, vet,
# staticcheck and `go test -race` of every module (one command each), then
# the fuzz targets, the local cluster, the container images, the failure
# drills and the Kubernetes drill (some in the background: see below).
#
#   scripts/test.sh            everything
#   SHORT=1 scripts/test.sh    skip the slow multi-process tests (-short), the
#                              fuzz targets, the local-cluster end-to-end, the
#                              image tests, the container drills and the
#                              Kubernetes drill
#   LC_SKIP_K8S=1 scripts/test.sh   skip only the Kubernetes drill
#   LC_TEST_SERIAL=1 scripts/test.sh  no step in the background (see below)
#   GOTEST_P=N scripts/test.sh   test packages run at once (default 4)
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

# Every module's packages named from the root (the workspace resolves each
# pattern): one go vet, one staticcheck and one go test load the packages
# the modules share once, not once per module.
pkgs=()
for m in "${MODULES[@]}"; do pkgs+=("./$m/..."); done

step "go vet"
go vet "${pkgs[@]}"

step "staticcheck"
staticcheck "${pkgs[@]}"

step "helm chart: lint, render with each values file, asserts"
scripts/test-chart.sh
# The chart's Go asserts run again below with the other modules.
export LIVECLUSTER_HELM="$(scripts/k8s/build.sh --print-dirs | grep '/helm@')/helm"

short=()
[ -n "${SHORT:-}" ] && short=(-short)

# --- Background steps -------------------------------------------------------
# The README's local cluster end to end, the container image tests and the
# Kubernetes drill spend most of their time waiting (health checks, drains,
# pod starts, kubelet syncs), each on names and ports of its own (31935-38081;
# 21000-21099; 16248-16443, with a containerd of its own), and none has a
# tight timing target. So, with the images built once first, they run in
# the background while the go tests and the fuzz targets run in the
# foreground. The failure drills, which do have timing targets, start only
# when the background steps have ended. Each background step's output goes
# to a file and is printed whole when it ends.
# LC_TEST_SERIAL=1 runs every step in the foreground, one after the other.
LANES=$(mktemp -d /tmp/lc-test-lanes.XXXXXX)
declare -A LANE_PID=() LANE_TITLE=()
LANE_IDS=() # in start order
lane_start() { # id title command...
  local id=$1
  LANE_TITLE[$id]=$2
  shift 2
  step "${LANE_TITLE[$id]}: started in the background"
  # setsid: a process group of its own, so an interrupt reaches all of it.
  setsid bash -c '"$@"; echo "$? $(date +%s)" >"$0.rc"' "$LANES/$id" "$@" >"$LANES/$id.log" 2>&1 </dev/null &
  LANE_PID[$id]=$!
  LANE_IDS+=("$id")
}
lanes_failed=()
lane_wait() { # id: waits, prints its output, records a failure
  local id=$1 rc at
  wait "${LANE_PID[$id]}" 2>/dev/null || true
  unset "LANE_PID[$id]"
  read -r rc at 2>/dev/null <"$LANES/$id.rc" || { rc=1; at=$(date +%s); }
  step "${LANE_TITLE[$id]} (background; ended at $(( at - start ))s, exit $rc)"
  cat "$LANES/$id.log"
  [ "$rc" = 0 ] || lanes_failed+=("${LANE_TITLE[$id]}")
}
lanes_end() { # on exit: never leave a background step running
  local st=$? id
  trap - EXIT INT TERM
  for id in "${LANE_IDS[@]}"; do
    [ -n "${LANE_PID[$id]:-}" ] || continue
    echo "waiting for the background step ${LANE_TITLE[$id]} to end (it removes what it started)" >&2
    lane_wait "$id"
  done
  rm -rf "$LANES"
  exit "$st"
}
lanes_interrupt() {
  local id
  for id in "${!LANE_PID[@]}"; do kill -TERM -- "-${LANE_PID[$id]}" 2>/dev/null || true; done
  exit 130
}
trap lanes_end EXIT
trap lanes_interrupt INT TERM

docker_ok=""
docker info >/dev/null 2>&1 && docker_ok=1
k8s_why=""
if [ -n "${SHORT:-}" ]; then
  k8s_why="SHORT=1"
elif [ -n "${LC_SKIP_K8S:-}" ]; then
  k8s_why="LC_SKIP_K8S=1"
elif why=$(. scripts/k8s/lib.sh && k8s_cannot_run); then
  k8s_why="this machine cannot run it: $why"
fi
serial=${LC_TEST_SERIAL:-}
# One tag for every step that builds or runs the images.
export VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}

if [ -z "${SHORT:-}" ] && [ -n "$docker_ok" ] && [ -z "$serial" ]; then
  # Built once here, before the steps that use them start side by side:
  # two scripts/images.sh at once would write the same build directory.
  # test-images.sh builds again (a cached no-op that checks the script),
  # the drills and the Kubernetes drill use these.
  step "container images (scripts/images.sh, BASE=scratch)"
  BASE=scratch scripts/images.sh
  lane_start e2e "the README's local cluster, end to end (scripts/e2e-local-cluster.sh)" scripts/e2e-local-cluster.sh
  lane_start images "container images and the compose cluster (scripts/test-images.sh)" scripts/test-images.sh
  if [ -z "$k8s_why" ]; then
    # The Kubernetes drill (scripts/k8s/, docs/kubernetes.md): a real
    # single-node cluster, the images, the chart and the seven drill steps.
    # Cold, the Kubernetes toolchain build adds about 30 minutes once.
    lane_start k8s "Kubernetes drill (scripts/k8s/run-drill.sh)" env LC_K8S_IMAGES_BUILT=1 scripts/k8s/run-drill.sh
  fi
fi

# All modules in one go test, so the packages of different modules run side
# by side, 4 at a time: most of the slow tests wait on processes, timers
# and leases rather than use the CPU. -trimpath makes the build cache independent of
# the checkout's directory (CI clones to a new one).
step "go test -race (-p ${GOTEST_P:-4})"
go test -race -trimpath -count=1 -timeout 15m -p "${GOTEST_P:-4}" "${short[@]}" "${pkgs[@]}"

if [ -z "${SHORT:-}" ]; then
  # Each target a few seconds (FUZZTIME); the seeds and corpora already ran
  # as plain tests above.
  step "fuzz targets (scripts/fuzz.sh, ${FUZZTIME:-3s} each)"
  scripts/fuzz.sh
fi

if [ -z "${SHORT:-}" ] && { [ -n "$serial" ] || [ -z "$docker_ok" ]; }; then
  step "the README's local cluster, end to end"
  scripts/e2e-local-cluster.sh
  step "container images and the compose cluster (skips without Docker)"
  scripts/test-images.sh
fi

for id in "${LANE_IDS[@]}"; do lane_wait "$id"; done
if [ ${#lanes_failed[@]} -gt 0 ]; then
  step "FAILED in the background: ${lanes_failed[*]}"
  exit 1
fi

# The short form of the failure drills (docs/operations.md, "Drills") on
# the images built above (same $VERSION, so the same tag).
if [ -z "${SHORT:-}" ]; then
  step "failure drills, short form (scripts/drills/run.sh --short; skips without Docker)"
  scripts/drills/run.sh --short origin-crash partition hls-continuity lb-checks ocm-failover etcd-quorum
fi

if [ -n "$k8s_why" ]; then
  step "Kubernetes drill: SKIPPED ($k8s_why)"
elif [ -n "$serial" ] || [ -z "$docker_ok" ]; then
  step "Kubernetes drill (scripts/k8s/run-drill.sh)"
  scripts/k8s/run-drill.sh
fi

step "all checks passed"
