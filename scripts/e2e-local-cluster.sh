#!/usr/bin/env bash
# Checks the README's first command as a user runs it: scripts/local-cluster.sh
# in a real terminal (tmux), a publish with ffmpeg, plays through the origin
# and the edge with ffmpeg/ffprobe, a lookup with grpcurl, then Ctrl-C, which
# must drain and stop every process the script started; then starts it again
# and closes the terminal (tmux kill-session: SIGHUP), which must leave no
# process running and no port held. Uses its own ports
# and state directory, so it does not disturb a cluster already running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/tools.sh
tools_install grpcurl
debian_install ffmpeg tmux curl

STATE=$(mktemp -d /tmp/livecluster-e2e.XXXXXX)
SESSION=lc-e2e-$$
export OCM_GRPC=127.0.0.1:37000 OCM_ADMIN=127.0.0.1:37985 ETCD_CLIENT=127.0.0.1:32379 ETCD_PEER=127.0.0.1:32380
export ORIGIN_RTMP=127.0.0.1:31935 ORIGIN_HTTP=127.0.0.1:38080 ORIGIN_ADMIN=127.0.0.1:37986
export EDGE_RTMP=127.0.0.1:31936 EDGE_HTTP=127.0.0.1:38081 EDGE_ADMIN=127.0.0.1:37987
export STATE

pub_pid=""
pids=""
cleanup() {
  [ -n "$pub_pid" ] && kill "$pub_pid" 2>/dev/null || true
  # On a failure, the cluster's processes may still run: stop them by pid.
  [ -n "${passed:-}" ] || for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  tmux kill-session -t "$SESSION" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT
fail() {
  echo "e2e-local-cluster: FAIL: $*" >&2
  tmux capture-pane -p -t "$SESSION" -S -100 2>/dev/null >&2 || true
  for f in "$STATE"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; } >&2; done
  exit 1
}
screen() { tmux capture-pane -p -t "$SESSION" -S -200; }
wait_screen() { # text timeout-seconds
  local i
  for i in $(seq 1 $(( $2 * 10 ))); do
    screen | grep -qF -- "$1" && return 0
    sleep 0.1
  done
  fail "\"$1\" not on the terminal within $2 s"
}

# env passes the ports through tmux, whose server may predate this shell.
tmux new-session -d -s "$SESSION" -x 200 -y 50 \
  "env OCM_GRPC=$OCM_GRPC OCM_ADMIN=$OCM_ADMIN ETCD_CLIENT=$ETCD_CLIENT ETCD_PEER=$ETCD_PEER \
   ORIGIN_RTMP=$ORIGIN_RTMP ORIGIN_HTTP=$ORIGIN_HTTP ORIGIN_ADMIN=$ORIGIN_ADMIN \
   EDGE_RTMP=$EDGE_RTMP EDGE_HTTP=$EDGE_HTTP EDGE_ADMIN=$EDGE_ADMIN STATE=$STATE \
   $ROOT/scripts/local-cluster.sh; echo local-cluster-exited-\$?; sleep 600"
wait_screen "livecluster is running" 300
echo "cluster up"

ffmpeg -nostdin -v error -re -f lavfi -i testsrc2=size=320x240:rate=30 \
  -f lavfi -i sine=frequency=1000:sample_rate=44100 -t 60 \
  -c:v libx264 -preset veryfast -g 30 -pix_fmt yuv420p -c:a aac \
  -f flv "rtmp://$ORIGIN_RTMP/live/e2e" >"$STATE/publish.log" 2>&1 &
pub_pid=$!

for i in $(seq 1 100); do
  grpcurl -plaintext -d '{"key":{"app":"live","name":"e2e"}}' "$OCM_GRPC" \
    livecluster.ocm.v1.OCMService/LookupStream >"$STATE/lookup.json" 2>/dev/null && break
  sleep 0.1
done
grep -q '"ownerNodeId": "origin-local"' "$STATE/lookup.json" || fail "OCM does not show origin-local owning live/e2e"
echo "OCM: live/e2e owned by origin-local"

probe() { # what url
  local out
  out=$(timeout 30 ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "$2" 2>&1) || fail "$1: ffprobe: $out"
  echo "$out" | grep -q h264 || fail "$1: no h264 in $out"
  echo "$out" | grep -q aac || fail "$1: no aac in $out"
  echo "$1: ok"
}
probe "origin HTTP-FLV" "http://$ORIGIN_HTTP/live/e2e.flv"
probe "origin RTMP" "rtmp://$ORIGIN_RTMP/live/e2e"
if [ -x bin/edge ]; then
  probe "edge RTMP" "rtmp://$EDGE_RTMP/live/e2e"
  probe "edge HTTP-FLV" "http://$EDGE_HTTP/live/e2e.flv"
fi
# HLS needs a few segments first.
for i in $(seq 1 100); do
  [ "$(curl -fsS "http://$ORIGIN_HTTP/live/e2e.m3u8" 2>/dev/null | grep -c '\.ts')" -ge 2 ] && break
  sleep 0.2
done
out=$(timeout 30 ffmpeg -nostdin -v error -i "http://$ORIGIN_HTTP/live/e2e.m3u8" -t 3 -f null - 2>&1) || fail "origin HLS: $out"
echo "origin HLS: ok"

pids=$(pgrep -f -- "--data-dir $STATE/etcd|--hls-dir $STATE/hls|--node-id edge-local --ocm $OCM_GRPC" || true)
[ -n "$pids" ] || fail "cannot find the cluster's processes"
kill "$pub_pid" 2>/dev/null || true
wait "$pub_pid" 2>/dev/null || true
pub_pid=""

# A real Ctrl-C in the terminal.
tmux send-keys -t "$SESSION" C-c
wait_screen "local-cluster-exited-0" 120
for p in $pids; do
  kill -0 "$p" 2>/dev/null && fail "process $p still running after Ctrl-C"
done
for b in ocm origin edge; do
  [ -f "$STATE/$b.log" ] || continue
  grep -q '"drain complete, exiting"' "$STATE/$b.log" || fail "$b did not drain"
done
echo "Ctrl-C drained and stopped every process"

# Closing the terminal: the script gets SIGHUP, its children (in their own
# sessions) get nothing from the terminal; the script must stop them.
tmux kill-session -t "$SESSION" 2>/dev/null || true
SESSION=lc-e2e-hup-$$
rm -f "$STATE"/*.log
tmux new-session -d -s "$SESSION" -x 200 -y 50 \
  "env OCM_GRPC=$OCM_GRPC OCM_ADMIN=$OCM_ADMIN ETCD_CLIENT=$ETCD_CLIENT ETCD_PEER=$ETCD_PEER \
   ORIGIN_RTMP=$ORIGIN_RTMP ORIGIN_HTTP=$ORIGIN_HTTP ORIGIN_ADMIN=$ORIGIN_ADMIN \
   EDGE_RTMP=$EDGE_RTMP EDGE_HTTP=$EDGE_HTTP EDGE_ADMIN=$EDGE_ADMIN STATE=$STATE \
   $ROOT/scripts/local-cluster.sh; sleep 600"
wait_screen "livecluster is running" 300
pids=$(pgrep -f -- "--data-dir $STATE/etcd|--hls-dir $STATE/hls|--node-id edge-local --ocm $OCM_GRPC" || true)
[ -n "$pids" ] || fail "cannot find the cluster's processes (second start)"
tmux kill-session -t "$SESSION"
listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
ports="$OCM_GRPC $OCM_ADMIN $ETCD_CLIENT $ETCD_PEER $ORIGIN_RTMP $ORIGIN_HTTP $ORIGIN_ADMIN $EDGE_RTMP $EDGE_HTTP $EDGE_ADMIN"
left=""
for i in $(seq 1 600); do
  left=""
  for p in $pids; do kill -0 "$p" 2>/dev/null && left+=" process $p"; done
  for a in $ports; do listening "$a" && left+=" port $a"; done
  [ -z "$left" ] && break
  sleep 0.1
done
[ -z "$left" ] || fail "60 s after the terminal closed, still running or held:$left"
for b in ocm origin edge; do
  [ -f "$STATE/$b.log" ] || continue
  grep -q '"drain complete, exiting"' "$STATE/$b.log" || fail "$b did not drain after the terminal closed"
done
echo "closing the terminal drained and stopped every process and freed every port"
passed=1
echo "e2e-local-cluster: 1 passed, 0 failed"
