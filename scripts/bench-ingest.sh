#!/usr/bin/env bash
# Ingest benchmark (issue 11): N publishers of a ~1 Mbps H.264/AAC stream
# each (loadgen publisher mode: a recorded FLV's tags at real-time pace, one
# stream key per publisher) into one origin pinned to one core (taskset -c
# 0), writing HLS to disk, the publishers on the other core (taskset -c 1);
# nginx-rtmp with `hls on` (Debian's nginx + libnginx-mod-rtmp, installed
# when missing) pinned the same way at the same points in the same run: one
# worker, with its master and cache manager (which runs hls_cleanup); the
# worker's and the cache manager's CPU are counted.
# Prints one JSON line per point:
#
#   {"bench":"ingest","streams":100,"origin":{...},"nginx":{...},"ratio_cpu":0.9}
#
# cpu_per_stream is CPU-seconds per second of the server process per
# publishing stream over the steady part of the run. A point is "none late"
# when every publisher connected, none failed, none fell more than 1 s behind
# real time (its writes blocked: the server did not read), the server wrote a
# playlist for every stream, and (origin) its HLS writers dropped nothing.
#
#   scripts/bench-ingest.sh                                     full size (quiet machine!)
#   POINTS="20 40" DURATION=10s scripts/bench-ingest.sh         smoke run
#
# Environment: POINTS ("100 200 300 400"), DURATION per run (30s), RAMP
# publishers started per second (100), PORT_BASE (25000: uses PORT_BASE+1
# .. +40 on 127.0.0.1), SERVER_CPU (0), LOAD_CPU (1), NGINX=0 to skip nginx,
# HLS_DIR (a temp dir under /tmp, on disk here; both servers write under it),
# PPROF=1 also saves a 10 s CPU profile of the origin at every point (in
# PPROF_DIR, default /tmp/livecluster-ingest-pprof). TRACE looks at both
# servers' system calls and kernel time over 10 s from the middle of every
# run, into PPROF_DIR as <server>-<n>.<kind>: TRACE=strace counts them
# (`strace -f -c`), TRACE=strace-T logs each file and descriptor call with
# its time (`strace -f -T -e trace=%file,%desc`), TRACE=perf records CPU
# samples with kernel stacks (`perf record -g`, and `perf report --stdio`
# beside it). strace slows a server several times over: a traced run's CPU
# and lateness figures are not measurements.
# Every process is started here, stopped by PID, and its state removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/tools.sh

POINTS=${POINTS:-"100 200 300 400"}
DURATION=${DURATION:-30s}
RAMP=${RAMP:-100}
P=${PORT_BASE:-25000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NGINX=${NGINX:-1}
PPROF=${PPROF:-0}
PPROF_DIR=${PPROF_DIR:-/tmp/livecluster-ingest-pprof}
TRACE=${TRACE:-}
H=127.0.0.1
OCM_GRPC=$H:$((P + 1)) OCM_ADMIN=$H:$((P + 2)) ETCD_CLIENT=$H:$((P + 3)) ETCD_PEER=$H:$((P + 4))
ORIGIN_RTMP=$H:$((P + 10)) ORIGIN_HTTP=$H:$((P + 11)) ORIGIN_ADMIN=$H:$((P + 12))
NGINX_RTMP=$H:$((P + 30))

debian_install ffmpeg jq curl util-linux
[ "$NGINX" = 1 ] && debian_install nginx libnginx-mod-rtmp
case $TRACE in
  "") ;;
  strace | strace-T) debian_install strace ;;
  perf) debian_install linux-perf ;;
  *) echo "bench-ingest: TRACE must be strace, strace-T or perf" >&2; exit 1 ;;
esac
NGINX_MOD=/usr/lib/nginx/modules/ngx_rtmp_module.so

BENCH=bench-ingest
. scripts/bench-lib.sh
HLS_DIR=${HLS_DIR:-$STATE/hls}
bench_build ocm origin loadgen

# The test stream, made once per machine: 480p30 H.264 at ~0.9 Mbit/s, 2 s
# GOP, 96 kbit/s AAC: ~1 Mbps on the wire.
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

mkdir -p "$HLS_DIR/origin" "$HLS_DIR/nginx"
LIVECLUSTER_ETCD_CLIENT_URL=http://$ETCD_CLIENT LIVECLUSTER_ETCD_PEER_URL=http://$ETCD_PEER \
  taskset -c "$LOAD_CPU" ./bin/ocm --node-id ocm-ingest --grpc-listen "$OCM_GRPC" --admin-listen "$OCM_ADMIN" \
  --data-dir "$STATE/etcd" --log-level warn >"$STATE/ocm.log" 2>&1 &
pids+=($!)
wait_http "http://$OCM_ADMIN/readyz" "${pids[-1]}" ocm
# HLS as nginx below: 2 s fragments, 6 in the playlist (the defaults), and
# the files of a finished stream removed after 5 s so every point starts on
# a clean directory.
LIVECLUSTER_HLS_DISPOSE=5s LIVECLUSTER_PPROF=$([ "$PPROF" = 1 ] && echo true || echo false) \
  taskset -c "$SERVER_CPU" ./bin/origin --node-id origin-ingest --ocm "$OCM_GRPC" --rtmp-listen "$ORIGIN_RTMP" \
  --http-listen "$ORIGIN_HTTP" --admin-listen "$ORIGIN_ADMIN" --advertise-host 127.0.0.1 \
  --hls-dir "$HLS_DIR/origin" --log-level warn >"$STATE/origin.log" 2>&1 &
ORIGIN_PID=$!
pids+=($ORIGIN_PID)
wait_http "http://$ORIGIN_ADMIN/readyz" "$ORIGIN_PID" origin

if [ "$NGINX" = 1 ]; then
  [ -f "$NGINX_MOD" ] || fail "nginx-rtmp module not at $NGINX_MOD"
  mkdir -p "$STATE/nginx/logs"
  # One worker, as the origin is one process. With a master process, as
  # nginx runs in production: only then does nginx start the cache manager
  # process, which is what runs `hls_cleanup` (removing fragments that
  # left the playlist; without it nginx removed no file at all and the
  # origin removed one per segment). The worker and the cache manager are
  # measured together (NGINX_PIDS).
  cat >"$STATE/nginx/nginx.conf" <<CONF
load_module $NGINX_MOD;
daemon off;
master_process on;
user $(id -un);
worker_processes 1;
worker_rlimit_nofile 65536;
pid $STATE/nginx/nginx.pid;
error_log $STATE/nginx/logs/error.log warn;
events { worker_connections 20000; }
rtmp {
  server {
    listen $NGINX_RTMP;
    chunk_size 4096;
    application live {
      live on;
      hls on;
      hls_path $HLS_DIR/nginx;
      hls_fragment 2s;
      hls_playlist_length 12s;
      hls_cleanup on;
    }
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
  # The master's children: the worker and the cache manager (hls_cleanup
  # has no cache loader).
  NGINX_PIDS=$(pgrep -P "$NGINX_PID" | paste -sd, -)
  [ "$(tr ',' '\n' <<<"$NGINX_PIDS" | wc -l)" = 2 ] || fail "want an nginx worker and a cache manager, have processes $NGINX_PIDS"
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "go: $(go version | cut -d' ' -f3); points: $POINTS; $DURATION per run; ramp $RAMP/s; server on cpu $SERVER_CPU, publishers on cpu $LOAD_CPU; HLS in $HLS_DIR ($(df --output=fstype "$HLS_DIR" | tail -1))" >&2

hls_dropped() {
  curl -fsS "http://$ORIGIN_ADMIN/metrics" | awk '$1 == "livecluster_origin_hls_dropped_packets_total" {print $2+0; f=1} END {if (!f) print 0}'
}
# playlists dir prefix n: how many of prefix0..prefix(n-1) have a playlist
playlists() {
  local d=$1 pre=$2 n=$3 i c=0
  for ((i = 0; i < n; i++)); do [ -s "$d/$pre$i.m3u8" ] && c=$((c + 1)); done
  echo "$c"
}
# publish name url pid n: one loadgen run; its summary in $STATE/name.json.
# The playlists are counted while the publishers still run (the origin
# removes them once a stream ends).
publish() {
  local name=$1 url=$2 pid=$3 n=$4 dir=$5 pre=$6
  taskset -c "$LOAD_CPU" ./bin/loadgen -publish "$n" -flv "$FLV" -url "$url" -stamp=false -ramp "$RAMP" \
    -duration "$DURATION" -pids "$pid" -json "$STATE/$name.json" -quiet 2>>"$STATE/loadgen.log" &
  local lg=$!
  local secs=${DURATION%s}
  if [ "$PPROF" = 1 ] && [ "$name" = "origin-$n" ]; then
    mkdir -p "$PPROF_DIR"
    (sleep $((secs / 2)) && curl -fsS -o "$PPROF_DIR/origin-$n.pprof" "http://$ORIGIN_ADMIN/debug/pprof/profile?seconds=10") &
  fi
  local tracer=""
  if [ -n "$TRACE" ]; then
    mkdir -p "$PPROF_DIR"
    local out=$PPROF_DIR/$name.$TRACE
    case $TRACE in
      strace) (sleep $((secs / 2)) && timeout -s INT 10 strace -f -c -o "$out" -p "$pid" >/dev/null 2>&1) & ;;
      strace-T) (sleep $((secs / 2)) && timeout -s INT 10 strace -f -T -tt -e trace=%file,%desc -o "$out" -p "$pid" >/dev/null 2>&1) & ;;
      perf) (sleep $((secs / 2)) && perf record -q -g -p "$pid" -o "$out" -- sleep 10 >/dev/null 2>&1 &&
        perf report -i "$out" --stdio --no-children --percent-limit 0.5 >"$out.txt" 2>/dev/null) & ;;
    esac
    tracer=$!
  fi
  sleep $((secs - 3))
  playlists "$dir" "$pre" "$n" >"$STATE/$name.playlists"
  wait "$lg" || true
  [ -n "$tracer" ] && { wait "$tracer" || true; }
  [ -s "$STATE/$name.json" ] || fail "loadgen wrote no summary for $name"
}
FIGS='{connected: .max_concurrent, errors: .errors_total, late_max, late_clients,
  cpu_s_per_s: .server.cpu_s_per_s, cpu_per_stream: ((.server.cpu_s_per_s_per_100 // 0) / 100),
  rss_per_stream_kib: ((.server.rss_per_client_bytes // 0) / 1024 | floor),
  rss_peak_mib: ((.server.rss_peak_bytes // 0) / 1048576 | floor),
  mbps_in: .mbps, loadgen_cpu_s_per_s: .loadgen.cpu_s_per_s}'
best_origin=0 best_nginx=0
for n in $POINTS; do
  d0=$(hls_dropped)
  publish "origin-$n" "rtmp://$ORIGIN_RTMP/live/o${n}s%d" "$ORIGIN_PID" "$n" "$HLS_DIR/origin/live" "o${n}s"
  sleep 2 # the HLS writers close and count what they dropped
  dropped=$(( $(hls_dropped) - d0 ))
  origin_json=$(jq -c --argjson pl "$(cat "$STATE/origin-$n.playlists")" --argjson dr "$dropped" \
    "$FIGS + {playlists: \$pl, hls_dropped: \$dr}" "$STATE/origin-$n.json")
  nginx_json=null
  if [ "$NGINX" = 1 ]; then
    publish "nginx-$n" "rtmp://$NGINX_RTMP/live/n${n}s%d" "$NGINX_PIDS" "$n" "$HLS_DIR/nginx" "n${n}s"
    nginx_json=$(jq -c --argjson pl "$(cat "$STATE/nginx-$n.playlists")" "$FIGS + {playlists: \$pl}" "$STATE/nginx-$n.json")
  fi
  line=$(jq -nc --argjson n "$n" --argjson o "$origin_json" --argjson x "$nginx_json" '{bench: "ingest", streams: $n,
      origin: $o, nginx: $x,
      ratio_cpu: (if $x != null and ($x.cpu_per_stream // 0) > 0 then ($o.cpu_per_stream / $x.cpu_per_stream) else null end)}')
  echo "$line"
  [ "$(jq '.origin | .late_max == 0 and .errors == 0 and .connected == .playlists and .hls_dropped == 0' <<<"$line")" = true ] &&
    [ "$(jq '.origin.connected == .streams' <<<"$line")" = true ] && best_origin=$n
  [ "$(jq '.nginx != null and (.nginx | .late_max == 0 and .errors == 0 and .connected == .playlists) and .nginx.connected == .streams' <<<"$line")" = true ] && best_nginx=$n
  sleep 6 # the origin disposes of the finished streams' files (nginx's cache manager removes old ones every 24 s)
done
echo "{\"bench\":\"ingest-summary\",\"most_streams_none_late\":{\"origin\":$best_origin,\"nginx\":$([ "$NGINX" = 1 ] && echo "$best_nginx" || echo null)}}"
