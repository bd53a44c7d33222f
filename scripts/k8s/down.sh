#!/usr/bin/env bash
# Tears down the cluster of scripts/k8s/up.sh and leaves the machine as up.sh
# found it: pods removed through the CRI, every process stopped by its
# recorded PID, kube-proxy's and CNI's iptables/ip6tables chains and our
# guard rule deleted, mounts under the state dir unmounted, the kubepods
# cgroups, the bridge lc0 and its route removed, the sysctls the kubelet
# changed restored, the directories it wrote outside the state dir removed
# (when up.sh found them missing), the Docker images up.sh created removed,
# and the state dir deleted. Idempotent: safe after a failed or partial
# up.sh, and when nothing is up.
#
# Then compares the machine with the snapshot up.sh took first and prints
# the differences that are ours (report in /tmp/lck8s-teardown.txt); exits
# non-zero when something of ours is left.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" -eq 0 ] || k8s_die "needs root"
REPORT=${LC_K8S_TEARDOWN_REPORT:-/tmp/lck8s-teardown.txt}
if [ -e "$STATE" ] && [ ! -e "$STATE/.lck8s" ]; then
  k8s_die "$STATE is not a cluster state dir (no .lck8s marker); refusing to touch it"
fi
s=$(date +%s)
PATH_SAVED=$PATH
k8s_bin_path 2>/dev/null || true

# stop SIGNAL-WAIT-SECONDS NAME...: SIGTERM to each at once (by recorded
# PID), then SIGKILL to those still running after SIGNAL-WAIT-SECONDS. At
# once, not one after the other: each takes 1-3 s to exit, and the
# kube-apiserver sometimes sits 10-15 s after logging its shutdown; nothing
# of this cluster's state is kept, so there is nothing to wait for.
stop() {
  local secs=$1 n i left killed=""; shift
  local -A pids=()
  for n in "$@"; do
    pids[$n]=$(k8s_pid "$n")
    [ -n "${pids[$n]}" ] && { kill -TERM "${pids[$n]}" 2>/dev/null || true; }
  done
  for ((i = 0; i < secs * 10; i++)); do
    left=""
    for n in "$@"; do [ -n "${pids[$n]}" ] && [ -d "/proc/${pids[$n]}" ] && left=1; done
    [ -n "$left" ] || break
    sleep 0.1
  done
  for n in "$@"; do
    if [ -n "${pids[$n]}" ] && [ -d "/proc/${pids[$n]}" ]; then
      k8s_log "$n (PID ${pids[$n]}) ignored SIGTERM for $secs s; SIGKILL"
      kill -KILL "${pids[$n]}" 2>/dev/null || true
      killed=1
    fi
    rm -f "$STATE/pids/$n.pid"
  done
  [ -z "$killed" ] || sleep 0.2
}

# Pods first, through the CRI, while containerd still runs: this tears down
# their network namespaces through CNI (veths, host-local leases, CNI-*
# rules). The kubelet is stopped before, so it does not restart them.
stop 15 kube-proxy kubelet
if [ -n "$(k8s_pid containerd)" ] && command -v crictl >/dev/null; then
  cri=(crictl --runtime-endpoint "unix://$CTRD_SOCK" --timeout 30s)
  for i in 1 2 3 4 5; do
    [ -z "$("${cri[@]}" pods -q 2>/dev/null)" ] && break
    "${cri[@]}" rmp -fa >/dev/null 2>&1 || true
    [ -z "$("${cri[@]}" pods -q 2>/dev/null)" ] && break
    sleep 1
  done
  [ -z "$("${cri[@]}" pods -q 2>/dev/null)" ] || k8s_log "pods still listed by the CRI after 5 tries"
fi
# The control plane, then its etcd (a kube-apiserver without its etcd
# would only wait longer), then containerd.
stop 5 kube-scheduler kube-controller-manager kube-apiserver
stop 10 etcd
stop 15 containerd
# containerd's shims and the containers they ran belong to our containerd:
# kill any left behind (found by the state dir on their command line).
for pid in $(pgrep -f "containerd-shim.*-address $CTRD_SOCK" 2>/dev/null || true); do
  kill -KILL "$pid" 2>/dev/null || true
done

if command -v kube-proxy >/dev/null; then
  kube-proxy --cleanup >/dev/null 2>&1 || true
fi

# iptables: KUBE-* and CNI-* chains (in every table), and our guard rules.
# Rules in other chains that jump to them go first; nothing else is touched.
for t in iptables ip6tables; do
  command -v "$t" >/dev/null || continue
  for table in filter nat mangle raw; do
    # (|| true: a table the kernel lacks is not an error here.)
    chains=$("$t" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}' || true)
    [ -n "$chains" ] || continue
    # Delete jumps into our chains from chains that are not ours.
    "$t" -t "$table" -S 2>/dev/null | awk '$1 == "-A" && $2 !~ /^(KUBE|CNI)-/ && / -j (KUBE|CNI)-/' |
      while read -r rule; do
        eval "$t -t $table ${rule/-A /-D }" 2>/dev/null || true
      done || true
    for c in $chains; do "$t" -t "$table" -F "$c" 2>/dev/null || true; done
    for c in $chains; do "$t" -t "$table" -X "$c" 2>/dev/null || true; done
  done
  # The guard rule, by its comment (however many copies a failed up left).
  { "$t" -S FORWARD 2>/dev/null | grep -- "--comment $GUARD_COMMENT" || true; } | while read -r rule; do
    eval "$t ${rule/-A /-D }" 2>/dev/null || true
  done
done

# iptables-nft creates a whole table on first use (kube-proxy and the
# kubelet touch mangle and the ip6 tables): remove each table that was not
# there before up.sh and is now empty (chains with policies, no rule).
if [ -f "$STATE/before/machine/nft-tables" ] && command -v nft >/dev/null; then
  nft list tables 2>/dev/null | while read -r _ fam name; do
    grep -qx "table $fam $name" "$STATE/before/machine/nft-tables" && continue
    if [ -z "$(nft list table "$fam" "$name" 2>/dev/null | grep -vE '^\s*(table |chain |type .* policy |\}|$)')" ]; then
      nft delete table "$fam" "$name" 2>/dev/null || true
    fi
  done || true
fi

# Mounts under the state dir, deepest first (the kubelet bind-mounts its
# root dir; containerd mounts rootfs and netns files).
if [ -d "$STATE" ]; then
  for i in 1 2 3; do
    mapfile -t mnts < <(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r)
    [ ${#mnts[@]} -eq 0 ] && break
    for m in "${mnts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
fi

# cgroups the kubelet made (cgroupfs driver: kubepods under each hierarchy).
for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done

if ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
  ip link del "$BRIDGE"
fi

# Sysctls back to what up.sh found.
if [ -f "$STATE/before/sysctl" ]; then
  while IFS='=' read -r k v; do
    [ "$(sysctl -n "$k" 2>/dev/null)" = "$v" ] || sysctl -qw "$k=$v" 2>/dev/null || k8s_log "cannot restore $k=$v"
  done <"$STATE/before/sysctl"
fi
if [ -f "$STATE/before/missing-dirs" ]; then
  while read -r d; do
    [ -n "$d" ] && [ -e "$d" ] && rm -rf "$d"
  done <"$STATE/before/missing-dirs"
fi

# Docker images that up.sh created (never one that was there before).
if [ -f "$STATE/images/created" ] && docker info >/dev/null 2>&1; then
  while read -r img; do
    [ -n "$img" ] && docker rmi "$img" >/dev/null 2>&1 || true
  done <"$STATE/images/created"
fi

rc=0
if [ -d "$STATE/before/machine" ]; then
  after=$(mktemp -d)
  "$K8S_ROOT/scripts/k8s/snapshot.sh" "$after"
  {
    echo "lck8s teardown check $(date -u +%FT%TZ): diff before-up vs after-down"
    for f in "$STATE/before/machine"/*; do
      diff -u "$f" "$after/$(basename "$f")" || true
    done
  } >"$REPORT"
  # Ours: anything naming our chains, bridge, networks, state dir, cgroups.
  ours=$(grep -E '^[-+][^-+]' "$REPORT" |
    grep -E 'KUBE-|CNI-|lck8s|lc0|10\.244\.|10\.96\.|livecluster-k8s|kubepods|/var/lib/kubelet|/var/lib/cni|/var/log/containers|^[-+](vm|kernel|net)\.|^[-+]\*|^[-+]table ' || true)
  if [ -n "$ours" ]; then
    k8s_log "the machine differs from before up.sh (full diff in $REPORT):"
    echo "$ours" >&2
    rc=1
  else
    n=$(grep -cE '^[-+][^-+]' "$REPORT" || true)
    k8s_log "machine as before up.sh ($n unrelated changed lines, e.g. other helpers' Docker containers; $REPORT)"
  fi
  rm -rf "$after"
fi

if [ -d "$STATE" ]; then
  # Never follow a mount that survived into the host's own files.
  if awk -v s="$STATE/" 'index($2, s) == 1' /proc/self/mounts | grep -q .; then
    k8s_log "mounts remain under $STATE; not deleting it"; rc=1
  else
    rm -rf "$STATE"
  fi
fi
PATH=$PATH_SAVED
k8s_log "down in $(( $(date +%s) - s )) s"
exit $rc
