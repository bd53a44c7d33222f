#!/usr/bin/env bash
# OCM benchmark: starts an ocm with a fresh embedded etcd on loopback, then
# loads it from a separate client process (ocm-bench): 200 origins claim
# 100k streams, LookupStream and AssignOrigin throughput and latency, the
# OCM's RSS, and the time from an origin's last heartbeat until its streams
# are free. Prints the figures; record them in docs/benchmarks.md.
#
#   scripts/bench-ocm.sh [ocm-bench flags...]     e.g. --streams 20000
#   scripts/bench-ocm.sh --watchers 500 --watch-keys 200 --churn 1000 \
#     --lookup-duration 0 --assign-duration 0 --expiry=false
#                                                 watch propagation under churn
#
# Environment: GRPC, ADMIN (the OCM's listen addresses), ETCD_CLIENT,
# ETCD_PEER (its embedded etcd's), LEASE_TTL.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$(mktemp -d /tmp/livecluster-bench.XXXXXX)
GRPC=${GRPC:-127.0.0.1:17000}
ADMIN=${ADMIN:-127.0.0.1:17985}
ETCD_CLIENT=${ETCD_CLIENT:-127.0.0.1:12379}
ETCD_PEER=${ETCD_PEER:-127.0.0.1:12380}
LEASE_TTL=${LEASE_TTL:-5s}

mkdir -p bin
(cd ocm && go build -o "$ROOT/bin/ocm" ./cmd/ocm && go build -o "$ROOT/bin/ocm-bench" ./cmd/ocm-bench)

LIVECLUSTER_ETCD_CLIENT_URL=http://$ETCD_CLIENT LIVECLUSTER_ETCD_PEER_URL=http://$ETCD_PEER \
  ./bin/ocm --node-id ocm-bench --grpc-listen "$GRPC" --admin-listen "$ADMIN" \
  --data-dir "$STATE/etcd" --lease-ttl "$LEASE_TTL" --log-level warn >"$STATE/ocm.log" 2>&1 &
OCM_PID=$!
cleanup() {
  kill -TERM "$OCM_PID" 2>/dev/null && wait "$OCM_PID" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT
for i in $(seq 1 100); do
  curl -fsS -o /dev/null "http://$ADMIN/readyz" 2>/dev/null && break
  sleep 0.1
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "go: $(go version | cut -d' ' -f3), lease TTL $LEASE_TTL"
./bin/ocm-bench --addr "$GRPC" --pid "$OCM_PID" "$@"
echo "ocm RSS at the end: $(awk '/VmRSS/ {print $2/1024 " MB"}' /proc/$OCM_PID/status), peak $(awk '/VmHWM/ {print $2/1024 " MB"}' /proc/$OCM_PID/status)"
