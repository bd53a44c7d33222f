#!/usr/bin/env bash
# Builds the three binaries and starts a local cluster on loopback with the
# embedded defaults: the OCM (with its embedded etcd), one origin and one
# edge. Ctrl-C (SIGINT), SIGTERM, or closing the terminal (SIGHUP) drains
# and stops every process it started, freeing their ports.
#
#   scripts/local-cluster.sh
#
# Ports (override with the environment variables in brackets):
#   OCM     gRPC 127.0.0.1:7000 [OCM_GRPC]    admin :1985 [OCM_ADMIN]
#           embedded etcd 127.0.0.1:2379 [ETCD_CLIENT] and :2380 [ETCD_PEER]
#   origin  RTMP 127.0.0.1:1935 [ORIGIN_RTMP] HTTP :8080 [ORIGIN_HTTP] admin :1986 [ORIGIN_ADMIN]
#   edge    RTMP 127.0.0.1:1936 [EDGE_RTMP]   HTTP :8081 [EDGE_HTTP]   admin :1987 [EDGE_ADMIN]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OCM_GRPC=${OCM_GRPC:-127.0.0.1:7000}
OCM_ADMIN=${OCM_ADMIN:-127.0.0.1:1985}
ORIGIN_RTMP=${ORIGIN_RTMP:-127.0.0.1:1935}
ORIGIN_HTTP=${ORIGIN_HTTP:-127.0.0.1:8080}
ORIGIN_ADMIN=${ORIGIN_ADMIN:-127.0.0.1:1986}
EDGE_RTMP=${EDGE_RTMP:-127.0.0.1:1936}
EDGE_HTTP=${EDGE_HTTP:-127.0.0.1:8081}
EDGE_ADMIN=${EDGE_ADMIN:-127.0.0.1:1987}
ETCD_CLIENT=${ETCD_CLIENT:-127.0.0.1:2379}
ETCD_PEER=${ETCD_PEER:-127.0.0.1:2380}
STATE=${STATE:-$ROOT/.cache/local-cluster}

echo "building into $ROOT/bin" >&2
mkdir -p bin "$STATE"
for b in ocm origin edge; do
  if [ -d "$b/cmd/$b" ]; then
    (cd "$b" && go build -o "$ROOT/bin/$b" "./cmd/$b")
  fi
done

# The children run in their own sessions (setsid) so the terminal's Ctrl-C
# reaches only this script, which then drains them one by one: a Ctrl-C
# delivered to them as well would count as a second signal and skip the drain.
pids=()
stop() { # [exit code]
  trap - INT TERM HUP
  echo >&2
  echo "draining: SIGTERM to ${pids[*]}" >&2
  # Edge first, then origin, then the OCM: the order of a real rollout.
  local p
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    p=${pids[$i]}
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  echo "stopped" >&2
  exit "${1:-0}"
}
trap stop INT TERM
# A closed terminal (SIGHUP) must stop the cluster too, or its processes
# (in their own sessions, so the hang-up never reaches them) keep running
# with their ports held. The terminal is gone: write nothing to it, since a
# write to a hung-up terminal fails and set -e would end the script before
# it stopped anything.
trap 'exec >/dev/null 2>&1; stop 129' HUP

wait_ready() { # name url log: the last process started must answer, not another one on the port
  local i pid=${pids[-1]}
  for i in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$1 exited at start; the end of $3:" >&2
      tail -5 "$3" >&2
      stop 1
    fi
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not become ready at $2 within 30 s (log: $3)" >&2
  stop 1
}

LIVECLUSTER_ETCD_CLIENT_URL=http://$ETCD_CLIENT LIVECLUSTER_ETCD_PEER_URL=http://$ETCD_PEER \
  setsid ./bin/ocm --node-id ocm-local --grpc-listen "$OCM_GRPC" --admin-listen "$OCM_ADMIN" \
  --data-dir "$STATE/etcd" >"$STATE/ocm.log" 2>&1 &
pids+=($!)
wait_ready ocm "http://$OCM_ADMIN/readyz" "$STATE/ocm.log"

if [ -x bin/origin ]; then
  setsid ./bin/origin --node-id origin-local --ocm "$OCM_GRPC" --rtmp-listen "$ORIGIN_RTMP" \
    --http-listen "$ORIGIN_HTTP" --admin-listen "$ORIGIN_ADMIN" --advertise-host 127.0.0.1 \
    --hls-dir "$STATE/hls" >"$STATE/origin.log" 2>&1 &
  pids+=($!)
  wait_ready origin "http://$ORIGIN_ADMIN/readyz" "$STATE/origin.log"
fi
if [ -x bin/edge ]; then
  setsid ./bin/edge --node-id edge-local --ocm "$OCM_GRPC" --rtmp-listen "$EDGE_RTMP" \
    --http-listen "$EDGE_HTTP" --admin-listen "$EDGE_ADMIN" --advertise-host 127.0.0.1 \
    >"$STATE/edge.log" 2>&1 &
  pids+=($!)
  wait_ready edge "http://$EDGE_ADMIN/readyz" "$STATE/edge.log"
fi

cat <<MSG

livecluster is running (logs in $STATE/*.log). Ctrl-C drains and stops it.

  OCM gRPC     grpcurl -plaintext $OCM_GRPC list
  OCM API      http://$OCM_ADMIN/api/v1/streams
MSG
if [ -x bin/origin ]; then cat <<MSG
  publish      ffmpeg -re -i input.flv -c copy -f flv rtmp://$ORIGIN_RTMP/live/s1
  play (RTMP)  ffplay rtmp://$ORIGIN_RTMP/live/s1
  HTTP-FLV     ffplay http://$ORIGIN_HTTP/live/s1.flv
  HLS          ffplay http://$ORIGIN_HTTP/live/s1.m3u8
MSG
fi
if [ -x bin/edge ]; then cat <<MSG
  via the edge publish rtmp://$EDGE_RTMP/live/s2, play rtmp://$EDGE_RTMP/live/s1,
               http://$EDGE_HTTP/live/s1.flv, http://$EDGE_HTTP/live/s1.m3u8
MSG
fi
echo

# Wait for a signal; if a process dies on its own, stop the rest.
while :; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "process $p exited; stopping the cluster" >&2
      stop 1
    fi
  done
  sleep 1 &
  wait $! || true
done
