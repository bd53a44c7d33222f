#!/usr/bin/env bash
# Starts a real single-node Kubernetes on this machine, offline
# (../shared/KUBERNETES.md has the why of every step): its own containerd
# (Docker's is never touched), etcd, kube-apiserver, controller-manager,
# scheduler, a kubelet running real containers through containerd's CRI,
# kube-proxy in iptables mode, CNI bridge networking on the bridge lc0
# (10.244.0.1/24) and CoreDNS. Binaries come from scripts/k8s/build.sh
# (cached by version; ~30 min cold). Everything lives under the state dir
# ($LC_K8S_STATE, default /var/lib/livecluster-k8s); scripts/k8s/down.sh
# removes it all and restores the machine.
#
#   scripts/k8s/up.sh        then: kubectl --kubeconfig $LC_K8S_STATE/admin.kubeconfig get nodes
#
# Refuses to start when the cluster is already up or one of its ports
# (16248-16443) is taken. On failure it prints the logs of the process that
# failed and exits non-zero, leaving what it started for down.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$K8S_ROOT/scripts/tools.sh"

t0=$(date +%s.%N)
declare -A TIMES
mark() { TIMES[$1]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'); }

[ "$(id -u)" -eq 0 ] || k8s_die "needs root (kubelet, iptables, mounts)"
docker info >/dev/null 2>&1 || k8s_die "Docker is not reachable (images are built with it)"
[ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || k8s_die "no cgroup hierarchy under /sys/fs/cgroup"

for p in "${PROCS[@]}"; do
  [ -z "$(k8s_pid "$p")" ] || k8s_die "$p is already running (PID $(k8s_pid "$p")); run scripts/k8s/down.sh first"
done
for port in "${ALL_PORTS[@]}"; do
  [ -z "$(k8s_port_owner "$port")" ] || k8s_die "port $port is taken by PID $(k8s_port_owner "$port" | tr '\n' ' ')"
done
if [ -e "$STATE" ] && [ ! -e "$STATE/.lck8s" ] && [ -n "$(ls -A "$STATE")" ]; then
  k8s_die "$STATE exists and is not ours (no .lck8s marker); set LC_K8S_STATE"
fi
ip link show "$BRIDGE" >/dev/null 2>&1 && k8s_die "bridge $BRIDGE exists; run scripts/k8s/down.sh first"

debian_install containernetworking-plugins conntrack socat containerd runc openssl iptables iproute2 curl
k8s_log "building (cached) the toolchain"
"$K8S_ROOT/scripts/k8s/build.sh"
k8s_bin_path
mark build

mkdir -p "$STATE"/{pids,logs,pki,before,containerd,cni/net.d,cni/ipam,kubelet,kubelet-pki,pod-logs,volume-plugins,flex,etcd,images,pv}
touch "$STATE/.lck8s"
chmod 700 "$STATE/etcd"

# What the machine looked like, for down.sh's check that it left it so.
# Kept only from the first up after a down: a retry must not record our own
# leftovers as "before".
if [ ! -s "$STATE/before/sysctl" ]; then
  for s in "${SYSCTLS[@]}"; do
    v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v"
  done >"$STATE/before/sysctl"
  for d in "${OUTSIDE_DIRS[@]}"; do [ -e "$d" ] || echo "$d"; done >"$STATE/before/missing-dirs"
  "$K8S_ROOT/scripts/k8s/snapshot.sh" "$STATE/before/machine"
fi

# --- certificates: one CA; the apiserver's serving cert; tokens for clients.
PKI=$STATE/pki
if [ ! -f "$PKI/ca.crt" ]; then
  k8s_log "certificates"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=lck8s-ca \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  cat >"$PKI/apiserver.ext" <<EOF
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
    -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 30 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  : >"$PKI/tokens.csv"
  for who in admin:system:masters kubelet:system:nodes kube-proxy:system:node-proxier \
    kube-controller-manager:system:kube-controller-manager kube-scheduler:system:kube-scheduler; do
    user=${who%%:*}; group=${who#*:}
    [ "$user" = kubelet ] && user=system:node:$NODE_NAME
    [ "$user" != admin ] && [ "${user#system:}" = "$user" ] && user=system:$user
    tok=$(openssl rand -hex 16)
    echo "$tok,$user,$user,\"$group\"" >>"$PKI/tokens.csv"
    name=${who%%:*}
    cat >"$STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lck8s
  cluster:
    certificate-authority: $PKI/ca.crt
    server: https://$NODE_IP:$PORT_APISERVER
users:
- name: $name
  user:
    token: $tok
contexts:
- name: lck8s
  context: {cluster: lck8s, user: $name}
current-context: lck8s
EOF
  done
  chmod 600 "$PKI"/*.key "$PKI/tokens.csv" "$STATE"/*.kubeconfig
fi
mark certs

# --- network: the bridge is the node IP; unmatched ClusterIP traffic stays
# on it; nothing from the pod network leaves by the uplink.
k8s_log "network: bridge $BRIDGE $NODE_IP/24"
ip link add "$BRIDGE" type bridge
ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
: >"$STATE/guard-rules"
for up in $(k8s_uplinks); do
  iptables -I FORWARD 1 -s "$CLUSTER_CIDR" -o "$up" -m comment --comment "$GUARD_COMMENT" -j DROP
  echo "$up" >>"$STATE/guard-rules"
done
# kube-proxy's ClusterIP rules must see traffic between pods on the bridge.
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
cat >"$STATE/cni/net.d/10-lck8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "lck8s",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/ipam"
      }
    },
    {"type": "firewall"},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
mark network

# start NAME CMD... runs a process detached, its PID under pids/, log under logs/.
start() {
  local name=$1; shift
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
}
# fail_with NAME WHAT prints the process's log tail and dies.
fail_with() {
  echo "--- $STATE/logs/$1.log (tail)" >&2
  tail -40 "$STATE/logs/$1.log" >&2 || true
  k8s_die "$2"
}
# own_port NAME PORT checks that the process listening on PORT is ours.
own_port() {
  local pid; pid=$(k8s_pid "$1")
  [ -n "$pid" ] || fail_with "$1" "$1 exited"
  k8s_port_owner "$2" | grep -qx "$pid" || fail_with "$1" "port $2 is not served by $1 (PID $pid) but by $(k8s_port_owner "$2" | tr '\n' ' ')"
}

# --- containerd: a second instance with its own config, root, state, socket.
k8s_log "containerd"
CT=$STATE/containerd
containerd config default | awk -v st="$STATE" -v ct="$CT" '
  /^\[/ || /^ *\[/ { sect = $0; gsub(/^ +| +$/, "", sect) }
  sect == "" && /^root = / { print "root = \"" ct "/root\""; next }
  sect == "" && /^state = / { print "state = \"" ct "/state\""; next }
  sect == "[grpc]" && /^ *address = / { print "  address = \"" ct "/containerd.sock\""; next }
  /^ *sandbox_image = / { sub(/=.*/, "= \"registry.k8s.io/pause:3.10\"") }
  /^ *restrict_oom_score_adj = / { sub(/=.*/, "= true") }
  /^ *netns_mounts_under_state_dir = / { sub(/=.*/, "= true") }
  sect ~ /cri".cni\]$/ && /^ *bin_dir = / { sub(/=.*/, "= \"/usr/lib/cni\"") }
  sect ~ /cri".cni\]$/ && /^ *conf_dir = / { sub(/=.*/, "= \"" st "/cni/net.d\"") }
  sect ~ /runtimes.runc.options\]$/ && /^ *SystemdCgroup = / { sub(/=.*/, "= false") }
  sect ~ /runtimes.runc.options\]$/ && /^ *Root = / { sub(/=.*/, "= \"" ct "/runc\"") }
  sect ~ /internal.v1.opt"\]$/ && /^ *path = / { sub(/=.*/, "= \"" ct "/opt\"") }
  { print }' >"$CT/config.toml"
for want in "root = \"$CT/root\"" "address = \"$CTRD_SOCK\"" 'restrict_oom_score_adj = true' \
  'netns_mounts_under_state_dir = true' "conf_dir = \"$STATE/cni/net.d\"" "Root = \"$CT/runc\"" \
  'sandbox_image = "registry.k8s.io/pause:3.10"' "path = \"$CT/opt\""; do
  grep -qF "$want" "$CT/config.toml" || k8s_die "containerd config: could not set $want"
done
start containerd containerd --config "$CT/config.toml"
k8s_wait 30 containerd ctr -a "$CTRD_SOCK" version || fail_with containerd "containerd did not answer"
mark containerd

# --- images: the sandbox (pause) and CoreDNS, built with Docker, imported,
# in the background while the control plane starts: no pod starts before
# CoreDNS, which waits for them.
"$K8S_ROOT/scripts/k8s/system-images.sh" &
images_pid=$!
# Should up.sh fail before waiting for it, it does not outlive up.sh.
trap 'kill "$images_pid" 2>/dev/null || true' EXIT

# --- etcd of the control plane.
k8s_log "etcd on 127.0.0.1:$PORT_ETCD_CLIENT"
start etcd etcd --name lck8s --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$PORT_ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$PORT_ETCD_CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$PORT_ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PORT_ETCD_PEER" \
  --initial-cluster "lck8s=http://127.0.0.1:$PORT_ETCD_PEER" --log-level warn
k8s_wait 30 etcd curl -fsS "http://127.0.0.1:$PORT_ETCD_CLIENT/health" || fail_with etcd "etcd not healthy"
own_port etcd "$PORT_ETCD_CLIENT"
mark etcd

# --- kube-apiserver.
k8s_log "kube-apiserver on $NODE_IP:$PORT_APISERVER"
start kube-apiserver kube-apiserver \
  --etcd-servers "http://127.0.0.1:$PORT_ETCD_CLIENT" --etcd-prefix /lck8s-registry \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$PORT_APISERVER" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
  --authorization-mode AlwaysAllow --allow-privileged=true \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --kubelet-preferred-address-types InternalIP \
  --profiling=false --v=1
k8s_wait 60 kube-apiserver kc get --raw /readyz || fail_with kube-apiserver "kube-apiserver not ready"
own_port kube-apiserver "$PORT_APISERVER"
mark apiserver

k8s_log "controller-manager, scheduler"
start kube-controller-manager kube-controller-manager \
  --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$PORT_CM" --leader-elect=false \
  --allocate-node-cidrs --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --use-service-account-credentials=false \
  --flex-volume-plugin-dir "$STATE/flex" --profiling=false --v=1
start kube-scheduler kube-scheduler \
  --kubeconfig "$STATE/kube-scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$PORT_SCHED" --leader-elect=false --profiling=false --v=1

# --- kubelet.
k8s_log "kubelet"
cat >"$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTRD_SOCK
address: $NODE_IP
port: $PORT_KUBELET
healthzBindAddress: 127.0.0.1
healthzPort: $PORT_KUBELET_HEALTHZ
readOnlyPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: ""
podLogsDir: $STATE/pod-logs
volumePluginDir: $STATE/volume-plugins
failSwapOn: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# A ConfigMap edit reaches the pods' volumes at the next pod sync; 2 s
# instead of 1 min keeps the drill short (docs/kubernetes.md): its step 5
# waits for three edits.
syncFrequency: 2s
EOF
start kubelet kubelet --config "$STATE/kubelet-config.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
  --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet-pki" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1

k8s_log "kube-proxy"
start kube-proxy kube-proxy --kubeconfig "$STATE/kube-proxy.kubeconfig" \
  --hostname-override "$NODE_NAME" --proxy-mode iptables --cluster-cidr "$CLUSTER_CIDR" \
  --nodeport-addresses "$POD_CIDR" \
  --healthz-bind-address "127.0.0.1:$PORT_PROXY_HEALTHZ" --metrics-bind-address "127.0.0.1:$PORT_PROXY_METRICS" \
  --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 --v=1

k8s_wait 60 kubelet curl -fsS "http://127.0.0.1:$PORT_KUBELET_HEALTHZ/healthz" || fail_with kubelet "kubelet not healthy"
own_port kubelet "$PORT_KUBELET"
k8s_wait 30 kube-proxy curl -fsS "http://127.0.0.1:$PORT_PROXY_HEALTHZ/healthz" || fail_with kube-proxy "kube-proxy not healthy"
own_port kube-proxy "$PORT_PROXY_HEALTHZ"
own_port kube-controller-manager "$PORT_CM"
own_port kube-scheduler "$PORT_SCHED"
k8s_wait 60 node kc get node "$NODE_NAME" || fail_with kubelet "node $NODE_NAME not registered"
kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=60s >/dev/null || {
  kc describe node "$NODE_NAME" >&2 || true
  fail_with kubelet "node $NODE_NAME not Ready"
}
mark node_ready

wait "$images_pid" || k8s_die "scripts/k8s/system-images.sh failed (output above)"
trap - EXIT
mark images

# --- CoreDNS and the storage class the drill's PersistentVolumes use.
k8s_log "CoreDNS"
sed -e "s/@DNS_IP@/$DNS_IP/g" -e "s#@COREDNS_IMAGE@#$(cat "$STATE/images/coredns")#g" \
  "$K8S_ROOT/scripts/k8s/manifests/coredns.yaml" | kc apply -f - >/dev/null
kc apply -f "$K8S_ROOT/scripts/k8s/manifests/storage.yaml" >/dev/null
if ! kc -n kube-system rollout status deployment/coredns --timeout=90s >/dev/null; then
  kc -n kube-system describe pods -l k8s-app=kube-dns >&2 || true
  kc -n kube-system logs -l k8s-app=kube-dns --tail=30 >&2 || true
  fail_with kubelet "CoreDNS not Ready"
fi
# From the host, through kube-proxy, to the CoreDNS pod.
k8s_wait 30 "kube-dns ClusterIP from the host" timeout 2 bash -c "</dev/tcp/$DNS_IP/53" ||
  k8s_die "the kube-dns ClusterIP $DNS_IP:53 does not answer from the host (kube-proxy?)"
mark coredns_ready

timings=""
for k in build certs network containerd etcd apiserver node_ready images coredns_ready; do
  timings+="$k=${TIMES[$k]}s "
done
k8s_log "cluster up; times since start: $timings"
echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
