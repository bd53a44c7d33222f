# Shared by the benchmark scripts (bench-fanout.sh, bench-ingest.sh,
# bench-hls.sh); sourced after they set BENCH (their name, for messages and
# the state directory). Gives STATE (a temporary directory removed on exit),
# pids (append the PID of each process a script starts, `pids+=($!)`; they are stopped
# in reverse order on exit), fail, wait_http and bench_build.
STATE=$(mktemp -d "/tmp/livecluster-$BENCH.XXXXXX")
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

# fail prints why, the last lines of every log in STATE, and exits 1.
fail() {
  echo "$BENCH: $*" >&2
  for f in "$STATE"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -5 "$f"; } >&2; done
  exit 1
}

# wait_http url pid what: until url answers 2xx, for at most 30 s, failing
# at once if pid exited.
wait_http() {
  local i
  for i in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || fail "$3 exited at start"
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$3 not ready at $1 within 30 s"
}

# bench_build binary...: builds the named binaries (ocm origin edge loadgen
# floor) into ./bin.
bench_build() {
  echo "building" >&2
  mkdir -p bin
  local b
  for b in "$@"; do
    case $b in
      ocm | origin | edge) (cd "$b" && go build -o "$ROOT/bin/$b" "./cmd/$b") ;;
      loadgen) (cd scripts/loadgen && go build -o "$ROOT/bin/loadgen" .) ;;
      floor) (cd scripts/loadgen && go build -o "$ROOT/bin/floor" ./cmd/floor) ;;
      *) fail "bench_build: unknown binary $b" ;;
    esac
  done
}
