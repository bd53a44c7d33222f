#!/usr/bin/env bash
# Runs the failure drills (docs/operations.md, "Drills") against the
# container images scripts/images.sh built, each on private Docker networks
# of its own, and prints one JSON line of figures per drill on stdout
# (progress on stderr).
#
#   scripts/drills/run.sh [--short] [drill...]     default: every drill
#   scripts/drills/run.sh --list
#
# The image tag comes from $VERSION as in scripts/images.sh (default: git
# describe): build first with `VERSION=... scripts/images.sh ocm origin edge`.
# LC_DRILL_PREFIX names the containers and networks (default lc-drill);
# LC_DRILL_DIR is the scratch directory (default: a new one under /tmp,
# removed when every drill passed, kept with the logs when one failed).
# LC_DRILL_ETCD_LOSE=follower: etcd-quorum kills a follower, not the leader.
#
# Exit status: 0 when every drill met its targets, or (with a message) when
# Docker is not usable here; 1 when a drill failed; 2 on bad usage.
# Everything a run creates carries the label lc.drill.run=<prefix>-<pid>
# and is removed on exit, also after Ctrl-C or a killed drill process.
set -euo pipefail
cd "$(dirname "$0")/../.."

args=()
list=""
for a in "$@"; do
  case $a in
    --short) args+=(-short) ;;
    --list) list=1 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run.sh: unknown option $a" >&2; exit 2 ;;
    *) args+=("$a") ;;
  esac
done

if ! docker info >/dev/null 2>&1; then
  echo "drills: SKIPPED: Docker is not available here (docker info failed)"
  exit 0
fi
command -v ffmpeg >/dev/null || { echo "drills: ffmpeg is missing" >&2; exit 1; }

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
# The tag rule of scripts/images.sh.
TAG=$(printf '%s' "$VERSION" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-128)
[[ $TAG =~ ^[A-Za-z0-9_] ]] || TAG="v$TAG"
PREFIX=${LC_DRILL_PREFIX:-lc-drill}
RUN=$PREFIX-$$
DIR=${LC_DRILL_DIR:-}
made_dir=""
if [ -z "$DIR" ]; then
  DIR=$(mktemp -d "/tmp/$PREFIX.XXXXXX")
  made_dir=1
fi
mkdir -p "$DIR/bin"

code=1
cleanup() {
  local ids
  ids=$(docker ps -aq --filter "label=lc.drill.run=$RUN" 2>/dev/null || true)
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
  ids=$(docker network ls -q --filter "label=lc.drill.run=$RUN" 2>/dev/null || true)
  [ -n "$ids" ] && docker network rm $ids >/dev/null 2>&1 || true
  if [ "$code" = 0 ] && [ -n "$made_dir" ]; then
    rm -rf "$DIR"
  elif [ "$code" != 0 ]; then
    echo "drills: logs and player summaries kept in $DIR" >&2
  fi
}
trap cleanup EXIT

# -trimpath: the build cache does not depend on the checkout's directory, so
# a fresh clone (CI's) reuses it (the drills run alone, on the suite's
# critical path).
(cd scripts/loadgen && go build -trimpath -o "$DIR/bin/loadgen" .)
(cd scripts/drills && go build -trimpath -o "$DIR/bin/drills" .)
if [ -n "$list" ]; then
  code=0
  "$DIR/bin/drills" -h 2>&1 | sed -n '/^drills:/,/^$/p'
  exit 0
fi
for n in ocm origin edge; do
  docker image inspect "livecluster/$n:$TAG" >/dev/null 2>&1 || {
    echo "drills: no image livecluster/$n:$TAG; build it: VERSION=$VERSION scripts/images.sh ocm origin edge" >&2
    exit 1
  }
done

set +e
"$DIR/bin/drills" -tag "$TAG" -prefix "$PREFIX" -run-label "$RUN" -dir "$DIR" \
  -loadgen "$DIR/bin/loadgen" -ffmpeg "$(command -v ffmpeg)" ${args[@]+"${args[@]}"}
code=$?
set -e
exit $code
