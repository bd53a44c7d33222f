#!/usr/bin/env bash
# HLS at the edge (issue 11): N HLS players (loadgen HLS mode: a live
# player's playlist reloads as RFC 8216, hls.js and ffmpeg pace them, about
# one per new segment, and one fetch of each new segment, each player on
# its own keep-alive connection) of one ~1 Mbps stream
# against the edge's caching proxy (edge/internal/hlsproxy) pinned to one
# core (taskset -c 0), the players on the other (taskset -c 1); in the same
# run Debian's nginx (one process, sendfile) pinned the same way serves the
# same stream's playlist and segments from the origin's HLS directory on
# disk. The OCM, the origin and the publisher run on the players' core.
# Prints one JSON line per point:
#
#   {"bench":"hls","players":2000,"edge":{...},"nginx":{...},"ratio_cpu":1.3}
#
# cpu_per_100 is CPU-seconds per second of the server process per 100
# connected players over the steady part of the run; late is players whose
# next segment came more than 3 s after a real player would have needed it.
#
#   scripts/bench-hls.sh                                     full size (quiet machine!)
#   POINTS="100 200" DURATION=20s scripts/bench-hls.sh       smoke run
#
# Environment: POINTS ("1000 2000"), DURATION per run (40s), RAMP players
# started per second (200), PORT_BASE (25000: uses PORT_BASE+1 .. +40 on
# 127.0.0.1), SERVER_CPU (0), LOAD_CPU (1), NGINX=0 to skip nginx, PPROF=1
# also saves a 10 s CPU profile of the edge at every point (in PPROF_DIR,
# default /tmp/livecluster-hls-pprof), HLS_RELOAD the players' playlist
# pacing (rfc: as RFC 8216, hls.js and ffmpeg; half: every half target
# duration, about twice the playlist requests; loadgen -hls-reload),
# EDGE_BIN the edge binary (the one built here), EDGE_B_BIN another edge
# binary (say, main's build; swap the two to even out the order) run as a second edge,
# "edge_b", at every point of the same run, pinned and measured the same
# way (its figures and ratio_cpu_b in the same line).
# Every process is started here, stopped by PID, and its state removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/tools.sh

POINTS=${POINTS:-"1000 2000"}
DURATION=${DURATION:-40s}
RAMP=${RAMP:-200}
P=${PORT_BASE:-25000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NGINX=${NGINX:-1}
PPROF=${PPROF:-0}
PPROF_DIR=${PPROF_DIR:-/tmp/livecluster-hls-pprof}
HLS_RELOAD=${HLS_RELOAD:-rfc}
EDGE_BIN=${EDGE_BIN:-./bin/edge}
EDGE_B_BIN=${EDGE_B_BIN:-}
H=127.0.0.1
OCM_GRPC=$H:$((P + 1)) OCM_ADMIN=$H:$((P + 2)) ETCD_CLIENT=$H:$((P + 3)) ETCD_PEER=$H:$((P + 4))
ORIGIN_RTMP=$H:$((P + 10)) ORIGIN_HTTP=$H:$((P + 11)) ORIGIN_ADMIN=$H:$((P + 12))
EDGE_RTMP=$H:$((P + 20)) EDGE_HTTP=$H:$((P + 21)) EDGE_ADMIN=$H:$((P + 22))
EDGE_B_RTMP=$H:$((P + 25)) EDGE_B_HTTP=$H:$((P + 26)) EDGE_B_ADMIN=$H:$((P + 27))
NGINX_HTTP=$H:$((P + 31))

debian_install ffmpeg jq curl util-linux
[ "$NGINX" = 1 ] && debian_install nginx

BENCH=bench-hls
. scripts/bench-lib.sh
bench_build ocm origin edge loadgen

# The same test stream as scripts/bench-ingest.sh: 480p30 H.264 at ~0.9
# Mbit/s, 2 s GOP, 96 kbit/s AAC.
FLV=${FLV:-$HOME/.cache/livecluster/bench-1mbps-480p.flv}
if [ ! -s "$FLV" ]; then
  echo "making the test stream $FLV" >&2
  mkdir -p "$(dirname "$FLV")"
  ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=854x480:rate=30 \
    -f lavfi -i sine=frequency=1000:sample_rate=44100 -t 30 \
    -c:v libx264 -preset veryfast -b:v 900k -maxrate 1M -bufsize 2M -g 60 -keyint_min 60 \
    -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 96k -f flv "$FLV.tmp"
  mv "$FLV.tmp" "$FLV"
fi

HLS_DIR=$STATE/hls
mkdir -p "$HLS_DIR"
LIVECLUSTER_ETCD_CLIENT_URL=http://$ETCD_CLIENT LIVECLUSTER_ETCD_PEER_URL=http://$ETCD_PEER \
  taskset -c "$LOAD_CPU" ./bin/ocm --node-id ocm-hls --grpc-listen "$OCM_GRPC" --admin-listen "$OCM_ADMIN" \
  --data-dir "$STATE/etcd" --log-level warn >"$STATE/ocm.log" 2>&1 &
pids+=($!)
wait_http "http://$OCM_ADMIN/readyz" "${pids[-1]}" ocm
taskset -c "$LOAD_CPU" ./bin/origin --node-id origin-hls --ocm "$OCM_GRPC" --rtmp-listen "$ORIGIN_RTMP" \
  --http-listen "$ORIGIN_HTTP" --admin-listen "$ORIGIN_ADMIN" --advertise-host 127.0.0.1 \
  --hls-dir "$HLS_DIR" --log-level warn >"$STATE/origin.log" 2>&1 &
pids+=($!)
wait_http "http://$ORIGIN_ADMIN/readyz" "${pids[-1]}" origin
LIVECLUSTER_PPROF=$([ "$PPROF" = 1 ] && echo true || echo false) \
  taskset -c "$SERVER_CPU" "$EDGE_BIN" --node-id edge-hls --ocm "$OCM_GRPC" --rtmp-listen "$EDGE_RTMP" \
  --http-listen "$EDGE_HTTP" --admin-listen "$EDGE_ADMIN" --advertise-host 127.0.0.1 \
  --log-level warn >"$STATE/edge.log" 2>&1 &
EDGE_PID=$!
pids+=($EDGE_PID)
wait_http "http://$EDGE_ADMIN/readyz" "$EDGE_PID" edge
EDGE_B_PID=
if [ -n "$EDGE_B_BIN" ]; then
  [ -x "$EDGE_B_BIN" ] || fail "EDGE_B_BIN $EDGE_B_BIN is not an executable"
  taskset -c "$SERVER_CPU" "$EDGE_B_BIN" --node-id edge-hls-b --ocm "$OCM_GRPC" --rtmp-listen "$EDGE_B_RTMP" \
    --http-listen "$EDGE_B_HTTP" --admin-listen "$EDGE_B_ADMIN" --advertise-host 127.0.0.1 \
    --log-level warn >"$STATE/edge-b.log" 2>&1 &
  EDGE_B_PID=$!
  pids+=($EDGE_B_PID)
  wait_http "http://$EDGE_B_ADMIN/readyz" "$EDGE_B_PID" edge_b
fi

if [ "$NGINX" = 1 ]; then
  mkdir -p "$STATE/nginx/logs" "$STATE/nginx/tmp"
  # One process (no master), like the edge; static files as an HLS origin
  # or CDN node serves them: sendfile, keep-alive, no access log (the edge
  # keeps none either).
  cat >"$STATE/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $STATE/nginx/nginx.pid;
error_log $STATE/nginx/logs/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  keepalive_timeout 75s;
  client_body_temp_path $STATE/nginx/tmp;
  proxy_temp_path $STATE/nginx/tmp;
  fastcgi_temp_path $STATE/nginx/tmp;
  uwsgi_temp_path $STATE/nginx/tmp;
  scgi_temp_path $STATE/nginx/tmp;
  types {
    application/vnd.apple.mpegurl m3u8;
    video/mp2t ts;
  }
  server {
    listen $NGINX_HTTP;
    root $HLS_DIR;
    location ~ \.m3u8\$ { add_header Cache-Control no-cache; }
    location ~ \.ts\$ { add_header Cache-Control max-age=60; }
  }
}
CONF
  taskset -c "$SERVER_CPU" nginx -p "$STATE/nginx" -e "$STATE/nginx/logs/error.log" -c "$STATE/nginx/nginx.conf" \
    >"$STATE/nginx.log" 2>&1 &
  NGINX_PID=$!
  pids+=($NGINX_PID)
  for i in $(seq 1 50); do
    curl -s -o /dev/null "http://$NGINX_HTTP/" && break
    kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited at start"
    sleep 0.1
  done
fi

taskset -c "$LOAD_CPU" ./bin/loadgen -publish 1 -flv "$FLV" -url "rtmp://$ORIGIN_RTMP/live/bench" -stamp=false \
  -duration 24h -quiet >"$STATE/publish.log" 2>&1 &
pids+=($!)
# A full playlist window (6 segments of 2 s) before players start, so both
# servers start every player on the same kind of playlist.
for i in $(seq 1 300); do
  [ "$(grep -c '\.ts' "$HLS_DIR/live/bench.m3u8" 2>/dev/null || echo 0)" -ge 6 ] && break
  sleep 0.1
done
[ -s "$HLS_DIR/live/bench.m3u8" ] || fail "the origin wrote no playlist"
curl -fsS -o /dev/null "http://$EDGE_HTTP/live/bench.m3u8" || fail "the edge does not serve the playlist"
[ "$NGINX" = 1 ] && { curl -fsS -o /dev/null "http://$NGINX_HTTP/live/bench.m3u8" || fail "nginx does not serve the playlist"; }
[ -n "$EDGE_B_BIN" ] && { curl -fsS -o /dev/null "http://$EDGE_B_HTTP/live/bench.m3u8" || fail "edge_b does not serve the playlist"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "go: $(go version | cut -d' ' -f3); points: $POINTS; $DURATION per run; ramp $RAMP/s; server on cpu $SERVER_CPU, players on cpu $LOAD_CPU; playlist reload $HLS_RELOAD; edge $EDGE_BIN${EDGE_B_BIN:+; edge_b $EDGE_B_BIN}" >&2

# play name url pid n: one loadgen run; its summary in $STATE/name.json
play() {
  local name=$1 url=$2 pid=$3 n=$4
  if [ "$PPROF" = 1 ] && [ "$name" = "edge-$n" ]; then
    mkdir -p "$PPROF_DIR"
    (sleep $(( ${DURATION%s} / 2 )) && curl -fsS -o "$PPROF_DIR/edge-$n.pprof" "http://$EDGE_ADMIN/debug/pprof/profile?seconds=10") &
  fi
  taskset -c "$LOAD_CPU" ./bin/loadgen -url "$url" -players "$n" -ramp "$RAMP" -duration "$DURATION" \
    -hls-reload "$HLS_RELOAD" -pids "$pid" -json "$STATE/$name.json" -quiet 2>>"$STATE/loadgen.log" || true
  [ -s "$STATE/$name.json" ] || fail "loadgen wrote no summary for $name"
}
FIGS='{connected: .max_concurrent, errors: .errors_total, error_kinds: .errors, late_max, late_clients,
  cpu_per_100: .server.cpu_s_per_s_per_100, cpu_s_per_s: .server.cpu_s_per_s,
  rss_per_player_kib: ((.server.rss_per_client_bytes // 0) / 1024 | floor),
  rss_peak_mib: ((.server.rss_peak_bytes // 0) / 1048576 | floor),
  mbps: .mbps, startup_p50_ms: .startup_ms.p50, loadgen_cpu_s_per_s: .loadgen.cpu_s_per_s}'
for n in $POINTS; do
  play "edge-$n" "http://$EDGE_HTTP/live/bench.m3u8" "$EDGE_PID" "$n"
  edge_b_json=null
  if [ -n "$EDGE_B_BIN" ]; then
    play "edge_b-$n" "http://$EDGE_B_HTTP/live/bench.m3u8" "$EDGE_B_PID" "$n"
    edge_b_json=$(jq -c "$FIGS" "$STATE/edge_b-$n.json")
  fi
  nginx_json=null
  if [ "$NGINX" = 1 ]; then
    play "nginx-$n" "http://$NGINX_HTTP/live/bench.m3u8" "$NGINX_PID" "$n"
    nginx_json=$(jq -c "$FIGS" "$STATE/nginx-$n.json")
  fi
  jq -c --argjson n "$n" --argjson nginx "$nginx_json" --argjson edge_b "$edge_b_json" --arg reload "$HLS_RELOAD" "$FIGS as \$e | {bench: \"hls\", players: \$n, reload: \$reload,
      edge: \$e, edge_b: \$edge_b, nginx: \$nginx,
      ratio_cpu: (if \$nginx != null and (\$nginx.cpu_per_100 // 0) > 0 then (\$e.cpu_per_100 / \$nginx.cpu_per_100) else null end),
      ratio_cpu_b: (if \$edge_b != null and \$nginx != null and (\$nginx.cpu_per_100 // 0) > 0 then (\$edge_b.cpu_per_100 / \$nginx.cpu_per_100) else null end)}" \
    "$STATE/edge-$n.json"
done
