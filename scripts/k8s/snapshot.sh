#!/usr/bin/env bash
# Records what the cluster of scripts/k8s/up.sh could change on the machine
# (iptables and ip6tables rules, network links and routes, mounts, the
# sysctls the kubelet sets, cgroups, directories it writes outside its state
# dir) into DIR, in a form that diffs cleanly: counters and the other
# helpers' veth names are left out. down.sh compares a snapshot taken before
# up.sh with one taken after the teardown.
#
#   scripts/k8s/snapshot.sh DIR
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out=${1:?usage: snapshot.sh DIR}
mkdir -p "$out"
for t in iptables ip6tables; do
  "$t-save" 2>/dev/null | grep -v '^#' | sed -E 's/ \[[0-9]+:[0-9]+\]$//' >"$out/$t" || true
done
# Docker's containers come and go (other helpers): keep links that are not
# veths, plus veths attached to anything but a Docker bridge.
ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | while read -r l; do
  case $l in
    veth*) master=$(ip -o link show "$l" 2>/dev/null | grep -o 'master [^ ]*' | cut -d' ' -f2)
      case $master in docker0|br-*) continue ;; esac
      echo "veth(master=${master:-none})" ;;
    *) echo "$l" ;;
  esac
done | sort >"$out/links"
ip route show table all | grep -vE 'dev (veth|br-|docker0)' | sort >"$out/routes" || true
awk '{print $2, $3}' /proc/self/mounts | grep -vE '^/var/lib/docker/|^/run/docker/netns/' | sort >"$out/mounts"
for s in "${SYSCTLS[@]}"; do printf '%s=%s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo -)"; done >"$out/sysctl"
find /sys/fs/cgroup -maxdepth 2 -name 'kubepods*' 2>/dev/null | sort >"$out/cgroups"
for d in "${OUTSIDE_DIRS[@]}"; do [ -e "$d" ] && echo "$d"; done >"$out/dirs" || true
# nftables tables (iptables-nft creates a table on first use, e.g. mangle).
nft list tables 2>/dev/null | sort >"$out/nft-tables" || true
