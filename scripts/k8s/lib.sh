# Shared by scripts/k8s/{up,down,load-images,drill}.sh: where the single-node
# cluster keeps its state, its fixed ports, and small helpers. Sourced, never
# run. Every name this cluster creates on the machine starts with lck8s (or is
# the bridge lc0), so teardown can find exactly what is ours.

K8S_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${LC_K8S_STATE:-/var/lib/livecluster-k8s}
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig
CTRD_SOCK=$STATE/containerd/containerd.sock

NODE_NAME=lck8s-node
BRIDGE=lc0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/12
DNS_IP=10.96.0.10
GUARD_COMMENT=lck8s-guard

# Fixed ports, none of them a default: our own OCM embeds etcd on
# 2379/2380, and other helpers use the usual ones.
PORT_ETCD_CLIENT=16379
PORT_ETCD_PEER=16380
PORT_APISERVER=16443
PORT_CM=16257
PORT_SCHED=16259
PORT_KUBELET=16250
PORT_KUBELET_HEALTHZ=16248
PORT_PROXY_HEALTHZ=16256
PORT_PROXY_METRICS=16249
ALL_PORTS=($PORT_ETCD_CLIENT $PORT_ETCD_PEER $PORT_APISERVER $PORT_CM $PORT_SCHED
  $PORT_KUBELET $PORT_KUBELET_HEALTHZ $PORT_PROXY_HEALTHZ $PORT_PROXY_METRICS)

# The control-plane processes in start order; down.sh stops them in reverse.
PROCS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

# Sysctls the kubelet (and we) may change; saved by up.sh, restored by down.sh.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet)

# Directories the kubelet and CNI write whatever --root-dir says; down.sh
# removes those that up.sh found missing.
OUTSIDE_DIRS=(/var/lib/kubelet /var/lib/cni /var/log/containers)

k8s_log() { echo "k8s: $*" >&2; }
k8s_die() { echo "k8s: FAIL: $*" >&2; exit 1; }

# k8s_bin_path puts the cached toolchain on PATH (building what is missing).
k8s_bin_path() {
  local d
  while read -r d; do PATH="$d:$PATH"; done < <("$K8S_ROOT/scripts/k8s/build.sh" --print-dirs)
  export PATH
}

kc() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# k8s_pid NAME prints the recorded PID of a running process of ours, or
# nothing when it is not running (a stale PID file whose process is gone or
# is another program counts as not running).
k8s_pid() {
  local f=$STATE/pids/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
  # The command line must still be ours: a PID can be reused.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$STATE" && echo "$pid"
  return 0
}

# k8s_port_owner PORT prints the PIDs listening on the TCP port.
k8s_port_owner() {
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

# k8s_wait SECONDS WHAT CMD... runs CMD until it succeeds, at most SECONDS.
k8s_wait() {
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  k8s_log "$what not ready within ${secs}s"
  return 1
}

# k8s_uplinks prints the interfaces of the default routes.
k8s_uplinks() {
  { ip -4 route show default; ip -6 route show default; } 2>/dev/null |
    awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | sort -u
}

# k8s_cannot_run prints why this machine cannot run the cluster (and returns
# 0), or prints nothing and returns 1 when it can.
k8s_cannot_run() {
  local why=()
  [ "$(id -u)" -eq 0 ] || why+=("not root (the kubelet, iptables and mounts need it)")
  command -v docker >/dev/null && docker info >/dev/null 2>&1 || why+=("Docker is not reachable (images are built with it)")
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || why+=("no cgroup hierarchy mounted under /sys/fs/cgroup")
  grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null || why+=("no overlay filesystem (containerd's snapshotter)")
  command -v iptables >/dev/null || why+=("no iptables")
  command -v go >/dev/null || why+=("no Go toolchain")
  local p
  for p in "${ALL_PORTS[@]}"; do
    [ -z "$(k8s_port_owner "$p" 2>/dev/null)" ] || { why+=("port $p is taken (a cluster already up?)"); break; }
  done
  [ ${#why[@]} -gt 0 ] || return 1
  local IFS=';'; echo "${why[*]}"
}
