#!/usr/bin/env bash
# Checks the container images and the compose cluster for real:
#
#  1. scripts/images.sh builds the four images with BASE=scratch; each is
#     at most 40 MB, runs as 65532:65532 with the binary as entrypoint, has
#     a HEALTHCHECK, the OCI labels, no shell, and its `version` prints
#     $VERSION.
#  2. etcd, the OCM on that etcd, an origin and an edge run hardened
#     (read-only root, a tmpfs on /data and /tmp, --user 65532, --cap-drop
#     ALL, no-new-privileges) on a network of their own until Docker reports
#     them healthy through the healthcheck subcommand; `docker stop` (SIGTERM
#     to PID 1) drains each in order (drain steps 1-4, "drain complete") and
#     exits 0.
#  3. deploy/compose/docker-compose.yml comes up under a unique project
#     name on ports 21000-21099; ffmpeg publishes to edge 1; ffprobe decodes
#     video and audio from edge 2 over RTMP, HTTP-FLV and HLS; `stop`, with
#     the publisher and a player still attached, drains every container to
#     exit 0 within stop_grace_period; `down -v` leaves no container,
#     network or volume of the project.
#
# Skips (exit 0, with a message) when Docker is not usable. Removes every
# container, network and volume it creates; the livecluster/* images stay.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if ! docker info >/dev/null 2>&1; then
  echo "test-images: SKIPPED: Docker is not available here (docker info failed)"
  exit 0
fi
COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
fi
for t in ffmpeg ffprobe curl; do
  command -v "$t" >/dev/null || { echo "test-images: $t is missing" >&2; exit 1; }
done

export VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
TAG=$(printf '%s' "$VERSION" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-128)
[[ $TAG =~ ^[A-Za-z0-9_] ]] || TAG="v$TAG"
MAX_BYTES=40000000
# docker stop -t for the binaries: startWait 2.3 + drainTimeout 30 +
# deregistration <= 5 + finalWait 3.2, the defaults, plus a margin.
STOP_T=45

ID=$$
NET=lcimg-net-$ID
PROJECT=lcimgtest$ID
WORK=$(mktemp -d /tmp/lcimg-test.XXXXXX)
containers=()
pub_pid=""
play_pid=""
compose_up=""
start=$(date +%s)
passed=0

dc() { "${COMPOSE[@]}" -p "$PROJECT" -f deploy/compose/docker-compose.yml "$@"; }
cleanup() {
  [ -n "$pub_pid" ] && kill "$pub_pid" 2>/dev/null || true
  [ -n "$play_pid" ] && kill "$play_pid" 2>/dev/null || true
  if [ ${#containers[@]} -gt 0 ]; then docker rm -f "${containers[@]}" >/dev/null 2>&1 || true; fi
  docker network rm "$NET" >/dev/null 2>&1 || true
  [ -n "$compose_up" ] && dc down -v -t 5 >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "test-images: FAIL: $*" >&2
  exit 1
}
ok() {
  passed=$((passed + 1))
  echo "ok   $* ($(( $(date +%s) - start ))s)"
}

# --- 1. build and inspect -------------------------------------------------
BASE=scratch scripts/images.sh | tee "$WORK/images.txt"
for n in ocm origin edge etcd; do
  img=livecluster/$n:$TAG
  size=$(docker image inspect -f '{{.Size}}' "$img")
  [ "$size" -le $MAX_BYTES ] || fail "$img is $size bytes, more than $MAX_BYTES"
  # Only that :latest exists: other worktrees on this Docker daemon may
  # have moved it to their build since (everything below uses $TAG).
  docker image inspect "livecluster/$n:latest" >/dev/null || fail "no livecluster/$n:latest"
  cfg=$(docker image inspect -f '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{.Config.WorkingDir}}|{{json .Config.Healthcheck.Test}}' "$img")
  want_cmd='["serve"]'
  [ "$n" = etcd ] && want_cmd=null
  [ "$cfg" = "65532:65532|[\"/$n\"]|$want_cmd|/data|[\"CMD\",\"/$n\",\"healthcheck\"]" ] || fail "$img config: $cfg"
  for l in title version revision source licenses created; do
    v=$(docker image inspect -f "{{index .Config.Labels \"org.opencontainers.image.$l\"}}" "$img")
    [ -n "$v" ] || fail "$img has no org.opencontainers.image.$l label"
  done
  [ "$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$img")" = "$VERSION" ] ||
    fail "$img: version label is not $VERSION"
  out=$(docker run --rm "$img" version 2>&1) || fail "$img version: $out"
  [[ "$out" == *" $VERSION "* ]] || fail "$img version printed \"$out\", not $VERSION"
  if docker run --rm --entrypoint /bin/sh "$img" -c true >/dev/null 2>&1; then fail "$img has a shell"; fi
  ok "$img: $(awk -v s="$size" 'BEGIN { printf "%.1f MB", s / 1e6 }') <= 40 MB, user 65532, healthcheck, labels, no shell; version: $out"
done

# --- 2. hardened containers, health, SIGTERM drain ------------------------
docker network create --label lcimg.test=$ID "$NET" >/dev/null
# Docker mounts a bare --tmpfs root-owned 0755: give /data to the user.
hardened=(--read-only --tmpfs /data:uid=65532,gid=65532,mode=0700 --tmpfs /tmp:mode=1777
  --user 65532:65532 --cap-drop ALL
  --security-opt no-new-privileges --network "$NET" --label lcimg.test=$ID)
extra=() # more docker run options for the next run
run() { # name image args...
  local name=$1 img=$2
  shift 2
  containers+=("$name")
  docker run -d --name "$name" --hostname "$name" "${hardened[@]}" ${extra[@]+"${extra[@]}"} "$img" "$@" >/dev/null
}
wait_healthy() { # container timeout-seconds
  local i st
  for i in $(seq 1 $(( $2 * 5 ))); do
    st=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$1")
    [ "$st" = "running healthy" ] && return 0
    [[ $st == running* ]] || { docker logs "$1" 2>&1 | tail -20 >&2; fail "$1 is $st"; }
    sleep 0.2
  done
  docker logs "$1" 2>&1 | tail -20 >&2
  docker inspect -f '{{json .State.Health}}' "$1" >&2
  fail "$1 not healthy within $2 s (status: $st)"
}
# The OCM keeps its state in the etcd container here (the compose cluster
# below uses the embedded etcd).
ETCD=lcimg-etcd-$ID
run "$ETCD" "livecluster/etcd:$TAG" --name etcd0 --listen-client-urls http://0.0.0.0:2379 \
  --advertise-client-urls "http://$ETCD:2379" --listen-peer-urls http://0.0.0.0:2380 \
  --initial-advertise-peer-urls "http://$ETCD:2380" --initial-cluster "etcd0=http://$ETCD:2380"
wait_healthy "$ETCD" 90
OCM=lcimg-ocm-$ID
run "$OCM" "livecluster/ocm:$TAG" serve --node-id ocm1 --etcd-endpoints "http://$ETCD:2379"
wait_healthy "$OCM" 90
extra=(-p 127.0.0.1:21090:8080)
run "lcimg-origin-$ID" "livecluster/origin:$TAG" serve --node-id origin1 --ocm "$OCM:7000" --advertise-host "lcimg-origin-$ID"
extra=()
run "lcimg-edge-$ID" "livecluster/edge:$TAG" serve --node-id edge1 --ocm "$OCM:7000" --advertise-host "lcimg-edge-$ID"
for c in "lcimg-origin-$ID" "lcimg-edge-$ID"; do wait_healthy "$c" 90; done
ok "etcd, ocm (on that etcd), origin, edge healthy with a read-only root, --user 65532, --cap-drop ALL"

# The origin wrote its default files into /data/hls on the tmpfs (the root
# is read-only) and serves them.
out=$(curl -fsS http://127.0.0.1:21090/crossdomain.xml) && [[ $out == *cross-domain-policy* ]] ||
  fail "hardened origin does not serve the crossdomain.xml it writes at start: $out"
ok "hardened origin wrote and serves /data/hls/crossdomain.xml"

# Edge and origin first, then the OCM, then etcd (a rollout's order).
stop_and_check() { # container
  local c=$1 t0 t1 code
  t0=$(date +%s.%N)
  docker stop -t $STOP_T "$c" >/dev/null
  t1=$(date +%s.%N)
  code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
  docker logs "$c" >"$WORK/$c.log" 2>&1
  echo "$code $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" >"$WORK/$c.stop"
}
# The edge is drained as a Kubernetes preStop hook does it: `edge drain`
# run inside the container (no shell needed) until the process has exited.
EDGE=lcimg-edge-$ID
docker exec "$EDGE" /edge drain >"$WORK/drain-exec.log" 2>&1 &
stop_and_check "lcimg-origin-$ID" &
timeout $STOP_T docker wait "$EDGE" >/dev/null || fail "$EDGE still running $STOP_T s after /edge drain"
wait # for the origin; the exec ends with the container, its status is moot
docker logs "$EDGE" >"$WORK/$EDGE.log" 2>&1
echo "$(docker inspect -f '{{.State.ExitCode}}' "$EDGE") ?" >"$WORK/$EDGE.stop"
grep -q '"msg":"drain requested".*"by":"admin api' "$WORK/$EDGE.log" ||
  { cat "$WORK/drain-exec.log" >&2; fail "$EDGE: the drain subcommand did not start the drain"; }
stop_and_check "$OCM"
stop_and_check "$ETCD"
check_drain_log() { # container how-the-drain-was-requested
  local log=$WORK/$1.log prev=0 pat n
  for pat in '"step":1,' '"step":2,' '"step":3,' '"step":4,' '"drain complete, exiting"'; do
    n=$(grep -n -m1 -F "$pat" "$log" | cut -d: -f1)
    [ -n "$n" ] || { tail -20 "$log" >&2; fail "$1: no log line with $pat after the drain request"; }
    [ "$n" -gt "$prev" ] || { tail -20 "$log" >&2; fail "$1: $pat out of order"; }
    prev=$n
  done
  grep -q "\"msg\":\"drain requested\".*$2" "$log" || fail "$1: no \"drain requested\" log line with $2"
}
read -r code _ <"$WORK/$EDGE.stop"
[ "$code" = 0 ] || { tail -20 "$WORK/$EDGE.log" >&2; fail "$EDGE exited $code after the drain subcommand"; }
check_drain_log "$EDGE" '"by":"admin api'
ok "docker exec $EDGE /edge drain (a preStop hook): drain steps 1-4 in order, exit 0"
for c in "lcimg-origin-$ID" "$OCM"; do
  read -r code secs <"$WORK/$c.stop"
  [ "$code" = 0 ] || { tail -20 "$WORK/$c.log" >&2; fail "$c exited $code after docker stop"; }
  check_drain_log "$c" '"signal":"terminated"'
  ok "docker stop $c (SIGTERM): drain steps 1-4 in order, exit 0 after $secs s"
done
read -r code secs <"$WORK/$ETCD.stop"
[ "$code" = 0 ] || { tail -20 "$WORK/$ETCD.log" >&2; fail "etcd exited $code after docker stop"; }
grep -q 'received signal; shutting down' "$WORK/$ETCD.log" || fail "etcd did not log its SIGTERM shutdown"
ok "docker stop $ETCD: shut down on SIGTERM, exit 0 after $secs s"
docker rm "${containers[@]}" >/dev/null
containers=()
docker network rm "$NET" >/dev/null
left="$(docker ps -aq --filter label=lcimg.test=$ID)$(docker network ls -q --filter label=lcimg.test=$ID)"
[ -z "$left" ] || fail "left behind: $left"

# --- 3. the compose cluster --------------------------------------------------
if [ ${#COMPOSE[@]} -eq 0 ]; then
  echo "test-images: compose part SKIPPED: neither docker compose nor docker-compose is installed"
  echo "test-images: $passed passed, 0 failed"
  exit 0
fi
export LC_TAG=$TAG LC_BIND=127.0.0.1
export OCM_GRPC_PORT=21000 OCM_ADMIN_PORT=21001
export EDGE1_RTMP_PORT=21035 EDGE1_HTTP_PORT=21080 EDGE2_RTMP_PORT=21036 EDGE2_HTTP_PORT=21081
compose_up=1
dc up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; fail "compose up"; }
for s in ocm origin1 origin2 edge1 edge2; do wait_healthy "$(dc ps -q "$s")" 90; done
ok "compose ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?')): ocm, 2 origins, 2 edges healthy"

ffmpeg -nostdin -v error -re -f lavfi -i testsrc2=size=320x240:rate=30 \
  -f lavfi -i sine=frequency=1000:sample_rate=44100 -t 90 \
  -c:v libx264 -preset veryfast -g 30 -pix_fmt yuv420p -c:a aac \
  -f flv "rtmp://127.0.0.1:$EDGE1_RTMP_PORT/live/imgtest" >"$WORK/publish.log" 2>&1 &
pub_pid=$!

owner=""
for i in $(seq 1 100); do
  owner=$(curl -fsS "http://127.0.0.1:$OCM_ADMIN_PORT/api/v1/streams/default/live/imgtest" 2>/dev/null |
    grep -o '"owner[A-Za-z_]*": *"origin[12]"' | grep -o 'origin[12]' | head -1) && [ -n "$owner" ] && break
  kill -0 "$pub_pid" 2>/dev/null || { cat "$WORK/publish.log" >&2; fail "ffmpeg publish to edge1 ended"; }
  sleep 0.2
done
[ -n "$owner" ] || { curl -sS "http://127.0.0.1:$OCM_ADMIN_PORT/api/v1/streams" >&2 || true; fail "the OCM shows no origin owning live/imgtest"; }
ok "publish to edge1 forwarded to $owner (OCM API)"

# decode PROTOCOL URL: ffprobe decodes 3 s and counts frames per stream.
decode() {
  local out v a
  out=$(timeout 40 ffprobe -v error -rw_timeout 15000000 -read_intervals %+3 -count_frames \
    -show_entries stream=codec_type,codec_name,width,height,nb_read_frames -of csv=p=0 "$2" 2>&1) ||
    fail "$1 $2: ffprobe: $out"
  v=$(echo "$out" | awk -F, '$2 == "video" && $1 == "h264" && $3 == 320 && $4 == 240 { print $5 }' | head -1)
  a=$(echo "$out" | awk -F, '$1 == "aac" && $2 == "audio" { print $3 }' | head -1)
  [ -n "$v" ] && [ "$v" -ge 45 ] || fail "$1: want >= 45 decoded 320x240 h264 frames in 3 s, got: $out"
  [ -n "$a" ] && [ "$a" -ge 50 ] || fail "$1: want >= 50 decoded aac frames in 3 s, got: $out"
  ok "edge2 $1: decoded $v video frames (h264 320x240), $a audio frames (aac) in 3 s"
}
decode RTMP "rtmp://127.0.0.1:$EDGE2_RTMP_PORT/live/imgtest"
decode HTTP-FLV "http://127.0.0.1:$EDGE2_HTTP_PORT/live/imgtest.flv"
for i in $(seq 1 150); do
  [ "$(curl -fsS "http://127.0.0.1:$EDGE2_HTTP_PORT/live/imgtest.m3u8" 2>/dev/null | grep -c '\.ts')" -ge 3 ] && break
  sleep 0.2
done
decode HLS "http://127.0.0.1:$EDGE2_HTTP_PORT/live/imgtest.m3u8"

# Stop with the publisher still on edge 1 and a player that never leaves
# on edge 2: that edge's drain runs to drainTimeout, and stop_grace_period
# must still cover it (exit 0, not SIGKILL's 137).
ffmpeg -nostdin -v error -i "rtmp://127.0.0.1:$EDGE2_RTMP_PORT/live/imgtest" -f null - >"$WORK/play.log" 2>&1 &
play_pid=$!
sleep 2
kill -0 "$play_pid" 2>/dev/null || { cat "$WORK/play.log" >&2; fail "the RTMP player on edge2 ended early"; }

ids=$(dc ps -q)
drains=""
t0=$(date +%s)
dc stop >"$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log" >&2; fail "compose stop"; }
for p in "$play_pid" "$pub_pid"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
pub_pid=""
for c in $ids; do
  name=$(docker inspect -f '{{.Name}}' "$c")
  code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
  [ "$code" = 0 ] || { docker logs "$c" 2>&1 | tail -20 >&2; fail "$name exited $code on compose stop"; }
  ms=$(docker logs "$c" 2>&1 | grep -F '"drain complete, exiting"' | grep -o '"elapsed_ms":[0-9]*' | cut -d: -f2)
  [ -n "$ms" ] || fail "$name did not drain on compose stop"
  drains+=" ${name#/${PROJECT}[_-]} $(awk -v m="$ms" 'BEGIN { printf "%.1f", m / 1000 }')s"
done
ok "compose stop with a publisher and a player attached: every container drained and exited 0 in $(( $(date +%s) - t0 )) s; drains:$drains"

dc down -v >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log" >&2; fail "compose down -v"; }
compose_up=""
left="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
left+="$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
left+="$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
left+="$(docker network ls -q --filter "name=^${PROJECT}_")$(docker volume ls -q --filter "name=^${PROJECT}_")"
[ -z "$left" ] || fail "compose down -v left: $left"
ok "compose down -v: no container, network or volume of $PROJECT left"

echo "test-images: $passed passed, 0 failed ($(( $(date +%s) - start ))s)"
