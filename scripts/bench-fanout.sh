#!/usr/bin/env bash
# Fan-out benchmark (issue 11): one ~2 Mbps H.264/AAC stream, N RTMP players
# on one edge pinned to one core (taskset -c 0), the load generator on the
# other (taskset -c 1); nginx-rtmp (Debian's nginx + libnginx-mod-rtmp,
# installed when missing) pinned the same way at the same points in the same
# run; then the floor (cmd/floor: the same bytes written with writev and
# nothing else) at the same points. Prints one JSON line per point:
#
#   {"bench":"fanout","players":500,"edge":{...},"nginx":{...},"ratio_cpu":0.74}
#   {"bench":"floor","n":500,"window_ms":20,...}
#
# CPU is CPU-seconds per second of the server process per 100 connected
# players over the steady part of each run; RSS per player is (peak − start)
# / players; late is players more than 3 s behind the wall clock; latency is
# publisher → player, from send times the publisher embeds (H.264 SEI).
#
#   scripts/bench-fanout.sh                                  full size (quiet machine!)
#   POINTS="50 100" DURATION=10s scripts/bench-fanout.sh     smoke run
#
# Environment: POINTS ("500 1000 2000 4000"), DURATION per run (30s), RAMP
# players started per second (500), FLOOR_WINDOWS ms ("0 20 50 100"),
# PORT_BASE (22000: uses PORT_BASE+1 .. +40 on 127.0.0.1), SERVER_CPU (0),
# LOAD_CPU (1), NGINX=0 to skip nginx, FLOOR=0 to skip the floor, PROTO
# (rtmp; httpflv plays the edge over HTTP-FLV, and nginx-rtmp, which has no
# HTTP-FLV, is then skipped).
# Every process is started here, stopped by PID, and its state removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/tools.sh

POINTS=${POINTS:-"500 1000 2000 4000"}
DURATION=${DURATION:-30s}
RAMP=${RAMP:-500}
FLOOR_WINDOWS=${FLOOR_WINDOWS:-"0 20 50 100"}
P=${PORT_BASE:-22000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NGINX=${NGINX:-1}
FLOOR=${FLOOR:-1}
PROTO=${PROTO:-rtmp}
case "$PROTO" in
  rtmp) ;;
  httpflv) NGINX=0 ;;
  *) echo "bench-fanout: PROTO must be rtmp or httpflv" >&2; exit 2 ;;
esac
H=127.0.0.1
OCM_GRPC=$H:$((P + 1)) OCM_ADMIN=$H:$((P + 2)) ETCD_CLIENT=$H:$((P + 3)) ETCD_PEER=$H:$((P + 4))
ORIGIN_RTMP=$H:$((P + 10)) ORIGIN_HTTP=$H:$((P + 11)) ORIGIN_ADMIN=$H:$((P + 12))
EDGE_RTMP=$H:$((P + 20)) EDGE_HTTP=$H:$((P + 21)) EDGE_ADMIN=$H:$((P + 22))
NGINX_RTMP=$H:$((P + 30))

debian_install ffmpeg jq curl util-linux
[ "$NGINX" = 1 ] && debian_install nginx libnginx-mod-rtmp
NGINX_MOD=/usr/lib/nginx/modules/ngx_rtmp_module.so

STATE=$(mktemp -d /tmp/livecluster-fanout.XXXXXX)
pids=()
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
  echo "bench-fanout: $*" >&2
  for f in "$STATE"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -5 "$f"; } >&2; done
  exit 1
}
wait_http() { # url pid what
  local i
  for i in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || fail "$3 exited at start"
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$3 not ready at $1 within 30 s"
}

echo "building" >&2
mkdir -p bin
for b in ocm origin edge; do (cd "$b" && go build -o "$ROOT/bin/$b" "./cmd/$b"); done
(cd scripts/loadgen && go build -o "$ROOT/bin/loadgen" . && go build -o "$ROOT/bin/floor" ./cmd/floor)

# The test stream, made once per machine: 720p30 H.264 at ~2 Mbps, 2 s GOP,
# 128 kbit/s AAC.
FLV=${FLV:-$HOME/.cache/livecluster/bench-2mbps-720p.flv}
if [ ! -s "$FLV" ]; then
  echo "making the test stream $FLV" >&2
  mkdir -p "$(dirname "$FLV")"
  ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
    -f lavfi -i sine=frequency=1000:sample_rate=44100 -t 30 \
    -c:v libx264 -preset veryfast -b:v 1900k -maxrate 2M -bufsize 4M -g 60 -keyint_min 60 \
    -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 128k -f flv "$FLV.tmp"
  mv "$FLV.tmp" "$FLV"
fi

# Pinned with taskset directly (not through a shell function, which would
# fork a subshell): taskset execs the program, so $! is the server's PID.

LIVECLUSTER_ETCD_CLIENT_URL=http://$ETCD_CLIENT LIVECLUSTER_ETCD_PEER_URL=http://$ETCD_PEER \
  taskset -c "$LOAD_CPU" ./bin/ocm --node-id ocm-bench --grpc-listen "$OCM_GRPC" --admin-listen "$OCM_ADMIN" \
  --data-dir "$STATE/etcd" --log-level warn >"$STATE/ocm.log" 2>&1 &
pids+=($!)
wait_http "http://$OCM_ADMIN/readyz" "${pids[-1]}" ocm
taskset -c "$LOAD_CPU" ./bin/origin --node-id origin-bench --ocm "$OCM_GRPC" --rtmp-listen "$ORIGIN_RTMP" \
  --http-listen "$ORIGIN_HTTP" --admin-listen "$ORIGIN_ADMIN" --advertise-host 127.0.0.1 \
  --hls-dir "$STATE/hls" --log-level warn >"$STATE/origin.log" 2>&1 &
pids+=($!)
wait_http "http://$ORIGIN_ADMIN/readyz" "${pids[-1]}" origin
taskset -c "$SERVER_CPU" ./bin/edge --node-id edge-bench --ocm "$OCM_GRPC" --rtmp-listen "$EDGE_RTMP" \
  --http-listen "$EDGE_HTTP" --admin-listen "$EDGE_ADMIN" --advertise-host 127.0.0.1 \
  --log-level warn >"$STATE/edge.log" 2>&1 &
EDGE_PID=$!
pids+=($EDGE_PID)
wait_http "http://$EDGE_ADMIN/readyz" "$EDGE_PID" edge

if [ "$NGINX" = 1 ]; then
  [ -f "$NGINX_MOD" ] || fail "nginx-rtmp module not at $NGINX_MOD"
  mkdir -p "$STATE/nginx/logs"
  # One process (no master), like the edge: its PID is the one that works.
  cat >"$STATE/nginx/nginx.conf" <<CONF
load_module $NGINX_MOD;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $STATE/nginx/nginx.pid;
error_log $STATE/nginx/logs/error.log warn;
events { worker_connections 20000; }
rtmp {
  server {
    listen $NGINX_RTMP;
    chunk_size 4096;
    application live { live on; }
  }
}
CONF
  taskset -c "$SERVER_CPU" nginx -p "$STATE/nginx" -e "$STATE/nginx/logs/error.log" -c "$STATE/nginx/nginx.conf" \
    >"$STATE/nginx.log" 2>&1 &
  NGINX_PID=$!
  pids+=($NGINX_PID)
  for i in $(seq 1 50); do
    (exec 3<>"/dev/tcp/${NGINX_RTMP%:*}/${NGINX_RTMP#*:}") 2>/dev/null && break
    kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited at start"
    sleep 0.1
  done
fi

# The publishers (loadgen publisher mode, stamping send times) run for the
# whole benchmark on the load core.
taskset -c "$LOAD_CPU" ./bin/loadgen -publish 1 -flv "$FLV" -url "rtmp://$ORIGIN_RTMP/live/bench" \
  -duration 24h -quiet >"$STATE/publish-origin.log" 2>&1 &
pids+=($!)
if [ "$NGINX" = 1 ]; then
  taskset -c "$LOAD_CPU" ./bin/loadgen -publish 1 -flv "$FLV" -url "rtmp://$NGINX_RTMP/live/bench" \
    -duration 24h -quiet >"$STATE/publish-nginx.log" 2>&1 &
  pids+=($!)
fi
sleep 3 # a GOP in every server's cache

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "go: $(go version | cut -d' ' -f3); points: $POINTS; $DURATION per run; ramp $RAMP/s; server on cpu $SERVER_CPU, players on cpu $LOAD_CPU" >&2

# play name url pid players: one loadgen run; its summary in $STATE/name.json
play() {
  taskset -c "$LOAD_CPU" ./bin/loadgen -url "$2" -players "$4" -ramp "$RAMP" -duration "$DURATION" \
    -pids "$3" -json "$STATE/$1.json" -quiet 2>>"$STATE/loadgen.log" || true
  [ -s "$STATE/$1.json" ] || fail "loadgen wrote no summary for $1"
}
FIGS='{connected: .max_concurrent, errors: .errors_total, late_max, late_clients,
  cpu_per_100: .server.cpu_s_per_s_per_100, cpu_s_per_s: .server.cpu_s_per_s,
  rss_per_player_kib: ((.server.rss_per_client_bytes // 0) / 1024 | floor),
  rss_peak_mib: ((.server.rss_peak_bytes // 0) / 1048576 | floor),
  latency_p50_ms: .latency_ms.p50, latency_p99_ms: .latency_ms.p99,
  startup_p50_ms: .startup_ms.p50, loadgen_cpu_s_per_s: .loadgen.cpu_s_per_s}'
best_edge=0 best_nginx=0
for n in $POINTS; do
  if [ "$PROTO" = httpflv ]; then
    play "edge-$n" "http://$EDGE_HTTP/live/bench.flv" "$EDGE_PID" "$n"
  else
    play "edge-$n" "rtmp://$EDGE_RTMP/live/bench" "$EDGE_PID" "$n"
  fi
  nginx_json=null
  if [ "$NGINX" = 1 ]; then
    play "nginx-$n" "rtmp://$NGINX_RTMP/live/bench" "$NGINX_PID" "$n"
    nginx_json=$(jq -c "$FIGS" "$STATE/nginx-$n.json")
  fi
  line=$(jq -c --argjson n "$n" --argjson nginx "$nginx_json" "$FIGS as \$e | {bench: \"fanout\", protocol: \"$PROTO\", players: \$n,
      edge: \$e, nginx: \$nginx,
      ratio_cpu: (if \$nginx != null and (\$nginx.cpu_per_100 // 0) > 0 then (\$e.cpu_per_100 / \$nginx.cpu_per_100) else null end)}" \
    "$STATE/edge-$n.json")
  echo "$line"
  [ "$(jq '.edge.late_max == 0 and .edge.errors == 0 and .edge.connected == .players' <<<"$line")" = true ] && best_edge=$n
  [ "$(jq '.nginx != null and .nginx.late_max == 0 and .nginx.errors == 0 and .nginx.connected == .players' <<<"$line")" = true ] && best_nginx=$n
done
echo "{\"bench\":\"fanout-summary\",\"most_players_none_late\":{\"edge\":$best_edge,\"nginx\":$([ "$NGINX" = 1 ] && echo "$best_nginx" || echo null)}}"

if [ "$FLOOR" = 1 ]; then
  taskset -c "$SERVER_CPU" ./bin/floor -flv "$FLV" -n "$(tr ' ' ',' <<<"$POINTS")" -window "$(tr ' ' ',' <<<"$FLOOR_WINDOWS")" \
    -duration "$DURATION" -reader-cpus "$LOAD_CPU" | jq -c '{bench: "floor"} + .'
fi
