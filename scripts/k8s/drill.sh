#!/usr/bin/env bash
# The Kubernetes drill of issue 8, on the cluster of scripts/k8s/up.sh with
# the images of scripts/images.sh (imported by scripts/k8s/load-images.sh):
# one JSON line of figures per step on stdout (and in $LC_DRILL_RESULTS,
# default /tmp/lck8s-drill.jsonl).
#
#   1 helm install --wait with the default values (bundled etcd) in
#     $LC_DRILL_NS-default, helm test, uninstall; meanwhile the
#     production-like values (ci/prod-values.yaml, edge drainTimeout 5 s,
#     finalWait 0.5 s) in $LC_DRILL_NS, helm test
#   2 ffmpeg publishes to the edge Service's ClusterIP; RTMP, HTTP-FLV and
#     HLS players (ffprobe) play through it; grpcurl lists the stream
#     through the OCM Service
#   3 kubectl rollout restart of the origin StatefulSet under the players
#   4 kubectl rollout restart of the edge Deployment under the players
#   5 live ConfigMap edits (log level, an HLS setting) and an invalid one
#   6 kubectl delete --grace-period=0 --force of the owning origin
#   7 helm upgrade of a restart-only value; helm uninstall leaves nothing
#
# The players are scripts/k8s/drillplay (ffmpeg/ffprobe processes with
# retry). Every wait is bounded; on a failure the drill prints the pods,
# events, descriptions and logs, and exits non-zero, leaving the release for
# inspection (scripts/k8s/down.sh removes everything).
#
# Env: VERSION (image tag; default `git describe --tags --always --dirty`),
# LC_DRILL_NS (lck8s-drill), LC_DRILL_STEPS (e.g. "1 2 3"; default all).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$K8S_ROOT/scripts/tools.sh"
cd "$K8S_ROOT"

NS=${LC_DRILL_NS:-lck8s-drill}
# Step 1's release with the default values lives in a namespace of its own,
# so that it can go away while the production-like one installs in $NS.
NS_DEFAULT=$NS-default
REL=lc
CHART=deploy/helm/livecluster
PROD_VALUES=$CHART/ci/prod-values.yaml
RESULTS=${LC_DRILL_RESULTS:-/tmp/lck8s-drill.jsonl}
STEPS=${LC_DRILL_STEPS:-1 2 3 4 5 6 7}
VERSION=${VERSION:-$(git describe --tags --always --dirty)}
STREAM=live/drill
PLAY_API=127.0.0.1:16990
WORK=$(mktemp -d /tmp/lck8s-drill.XXXXXX)

[ -f "$KUBECONFIG_ADMIN" ] || k8s_die "no cluster: run scripts/k8s/up.sh"
[ -d "$CHART" ] || k8s_die "no chart at $CHART"
k8s_bin_path
tools_install grpcurl
debian_install ffmpeg jq curl coreutils
export KUBECONFIG=$KUBECONFIG_ADMIN
: >"$RESULTS"

BG=()
cleanup() {
  local p
  for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BG[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
# emit STEP-JSON: one line of figures, on stdout and in $RESULTS.
emit() { jq -c . <<<"$1" | tee -a "$RESULTS"; }

fail() {
  echo "drill: FAIL: $*" >&2
  {
    echo "--- pods"; kc -n "$NS" get pods -o wide
    echo "--- pods of $NS_DEFAULT"; kc -n "$NS_DEFAULT" get pods -o wide 2>/dev/null || true
    echo "--- events"; kc -n "$NS" get events --sort-by=.lastTimestamp | tail -40
    for p in $(kc -n "$NS" get pods -o name 2>/dev/null); do
      if ! kc -n "$NS" get "$p" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True; then
        echo "--- describe $p"; kc -n "$NS" describe "$p" | tail -40
      fi
      echo "--- logs $p (tail)"; kc -n "$NS" logs "$p" --all-containers --tail=20 2>&1 || true
      kc -n "$NS" logs "$p" --all-containers --previous --tail=20 2>/dev/null | sed 's/^/previous: /' || true
    done
    [ -f "$WORK/drillplay.log" ] && { echo "--- drillplay"; tail -20 "$WORK/drillplay.log"; }
    curl -fsS "http://$PLAY_API/stats" 2>/dev/null | jq -c '.[] | {name, packets, disconnects, sinceLastPacketMs, lastErr}' || true
  } >&2 2>&1
  exit 1
}

# wait_for SECONDS WHAT CMD...: bounded poll.
wait_for() {
  local secs=$1 what=$2 end; shift 2
  end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || fail "$what: not within ${secs}s"
    sleep 0.5
  done
}

sel() { echo "app.kubernetes.io/instance=$REL,app.kubernetes.io/component=$1"; }
# pods_of COMPONENT: its pods that are not terminating.
pods_of() { kc -n "$NS" get pods -l "$(sel "$1")" -o json | jq -r '.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name'; }
# uids_of COMPONENT: "name uid" of its pods, sorted.
uids_of() { kc -n "$NS" get pods -l "$(sel "$1")" -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.uid}{"\n"}{end}' | sort; }
svc_ip() { kc -n "$NS" get svc "$1" -o jsonpath='{.spec.clusterIP}'; }
pod_ip() { kc -n "$NS" get pod "$1" -o jsonpath='{.status.podIP}'; }
restarts_of() { kc -n "$NS" get pods -l "app.kubernetes.io/instance=$REL" -o json |
  jq -c '[.items[] | {pod: .metadata.name, restarts: ([.status.containerStatuses[]?.restartCount] | add)}] | sort_by(.pod)'; }
all_ready() { ! kc -n "$NS" get pods -l "app.kubernetes.io/instance=$REL" -o json |
  jq -e '.items[] | select(.metadata.deletionTimestamp == null) | select([.status.conditions[]? | select(.type=="Ready" and .status=="True")] | length == 0)' >/dev/null; }

# The cluster has no cloud: a LoadBalancer Service would never get an
# address and `helm install --wait` would wait forever. Like k3s's service
# load balancer, give each one the node IP (kube-proxy then serves it there).
lb_loop() {
  while sleep 1; do
    kc get svc -A -o json 2>/dev/null |
      jq -r --arg a "$NS" --arg b "$NS_DEFAULT" '.items[] | select(.metadata.namespace == $a or .metadata.namespace == $b)
        | select(.spec.type=="LoadBalancer" and ((.status.loadBalancer.ingress // []) | length) == 0)
        | "\(.metadata.namespace) \(.metadata.name)"' |
      while read -r ns s; do
        kc -n "$ns" patch svc "$s" --subresource=status --type=merge \
          -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$NODE_IP\"}]}}}" >/dev/null 2>&1 || true
      done
  done
}

# pv_pool N: N fresh hostPath PersistentVolumes of class local-drill (the
# default class of up.sh): Released ones (their claims are gone) are deleted
# and their data wiped, so every install starts empty.
pv_pool() {
  local n=$1 i name
  kc get pv -o json | jq -r '.items[] | select(.spec.storageClassName=="local-drill" and (.status.phase=="Released" or .status.phase=="Failed")) | .metadata.name' |
    while read -r name; do kc delete pv "$name" --wait=true --timeout=60s >/dev/null; rm -rf "${STATE:?}/pv/$name"; done
  for ((i = 1; i <= n; i++)); do
    name=lck8s-pv-$i
    kc get pv "$name" >/dev/null 2>&1 && continue
    # 0777: the pods run as a non-root user and hostPath ignores fsGroup.
    mkdir -p "$STATE/pv/$name"; chmod 0777 "$STATE/pv/$name"
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $name, labels: {lck8s: drill}}
spec:
  storageClassName: local-drill
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $STATE/pv/$name, type: Directory}
EOF
  done
}

HELM_COMMON=(--set "fullnameOverride=$REL"
  --set "global.image.tag=$VERSION" --set global.image.pullPolicy=Never)
# The release steps 2-7 run on: the production-like values with two
# shutdown durations shortened, each a fixed wait in a drain that the steps
# run many times (the chart derives the grace periods from them as from the
# defaults; the same drain, the same code path):
# - the edges' drainTimeout 5 s instead of 30 s: the edge rollout (step 4)
#   waits 5 s, not 30, for the players that stay before telling them to
#   leave (they never leave on their own);
# - finalWait 0.5 s instead of 3.2 s (the pause after deregistering, before
#   exit): six origin restarts (steps 3 and 7), two edges and the uninstall.
PROD_SETS=(-f "$PROD_VALUES" --set edge.config.shutdown.drainTimeout=5s)
for c in ocm origin edge; do PROD_SETS+=(--set "$c.config.shutdown.finalWait=0.5s"); done

# install NAME NAMESPACE ARGS...: helm install --wait; prints the
# milliseconds taken.
install() {
  local what=$1 ns=$2 t; shift 2
  t=$(now_ms)
  helm install "$REL" "$CHART" --namespace "$ns" "${HELM_COMMON[@]}" --create-namespace --wait --timeout 300s "$@" \
    >"$WORK/helm-install-$what.log" 2>&1 || { cat "$WORK/helm-install-$what.log" >&2; fail "helm install ($what)"; }
  echo $(( $(now_ms) - t ))
}
# uninstall [NAMESPACE]: helm uninstall --wait, then until its pods are gone.
uninstall() {
  local ns=${1:-$NS}
  helm uninstall "$REL" --namespace "$ns" --wait --timeout 180s >/dev/null || fail "helm uninstall ($ns)"
  wait_for 120 "pods of the release in $ns gone" bash -c "[ -z \"\$(kubectl -n $ns get pods -o name 2>/dev/null)\" ]"
}
# helm_test NAMESPACE: prints the milliseconds taken, or fails.
helm_test() {
  local t; t=$(now_ms)
  # No --logs: the chart deletes passed test pods (hook-succeeded), and
  # helm would fail fetching their logs. A failed one stays for fail().
  if ! helm test "$REL" --namespace "$1" --timeout 180s >"$WORK/helm-test-$1.log" 2>&1; then
    cat "$WORK/helm-test-$1.log" >&2; fail "helm test ($1)"
  fi
  echo $(( $(now_ms) - t ))
}

# Images: the drill runs what scripts/images.sh built, as containerd sees it.
# (The list first: grep -q in a pipe would close it early and, with
# pipefail, fail the pipeline through ctr's SIGPIPE.)
have=$(ctr -a "$CTRD_SOCK" -n k8s.io images ls -q)
for c in ocm origin edge etcd; do
  img=livecluster/$c:$VERSION
  if ! grep -qx "docker.io/$img" <<<"$have"; then
    docker image inspect "$img" >/dev/null 2>&1 || k8s_die "image $img not in Docker: run VERSION=$VERSION scripts/images.sh"
    "$K8S_ROOT/scripts/k8s/load-images.sh" "$img"
  fi
done

# Only while the releases are installed: Services get their address then,
# and a kubectl and a jq a second for the whole drill were about a third of
# its own CPU time (measured with process accounting).
lb_loop &
LB_PID=$!
BG+=($LB_PID)
want() { [[ " $STEPS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- step 1
# Leftovers of an earlier, failed run would make the install fail, and so
# would a namespace still terminating after an earlier run.
for ns in "$NS" "$NS_DEFAULT"; do
  kc wait --for=delete "namespace/$ns" --timeout=180s >/dev/null 2>&1 ||
    fail "namespace $ns still there 180 s after an earlier run deleted it"
  if helm status "$REL" --namespace "$ns" >/dev/null 2>&1; then uninstall "$ns"; fi
  kc delete pvc -n "$ns" --all --wait=true --timeout=60s >/dev/null 2>&1 || true
done
# PersistentVolumes an earlier run deleted (step 7 does not wait for them).
for pv in $(kc get pv -l lck8s=drill -o json | jq -r '.items[] | select(.metadata.deletionTimestamp != null) | .metadata.name'); do
  kc wait --for=delete "pv/$pv" --timeout=120s >/dev/null 2>&1 || fail "PersistentVolume $pv still there 120 s after an earlier run deleted it"
done
if want 1; then
  # 3 etcd claims of the default release, 3 etcd and 3 origin HLS claims
  # of the production-like one, bound at the same time.
  pv_pool 10
  d_install=$(install default "$NS_DEFAULT")
  d_pods=$(kc -n "$NS_DEFAULT" get pods -o name | wc -l)
  d_test=$(helm_test "$NS_DEFAULT")
  # The default release is uninstalled while the production-like one
  # installs (their pods' CPU requests fit the node together): the
  # uninstall's drains are waits, not work.
  {
    uninstall "$NS_DEFAULT"
    kc -n "$NS_DEFAULT" get pvc -o name | wc -l >"$WORK/default-left-pvc"
  } &
  d_uninstall=$!
  p_install=$(install prod "$NS" "${PROD_SETS[@]}")
  p_pods=$(kc -n "$NS" get pods -o name | wc -l)
  p_test=$(helm_test "$NS")
  wait "$d_uninstall" || fail "uninstall of the default-values release (above)"
  d_left_pvc=$(cat "$WORK/default-left-pvc")
  # Its claims and namespace go in the background (the drill's end waits).
  kc delete namespace "$NS_DEFAULT" --wait=false >/dev/null
  emit "{\"step\":1,\"name\":\"helm-install\",\"version\":\"$VERSION\",
    \"default\":{\"installWaitMs\":$d_install,\"pods\":$d_pods,\"helmTest\":\"passed\",\"helmTestMs\":$d_test,\"pvcsLeftAfterUninstall\":$d_left_pvc},
    \"prod\":{\"installWaitMs\":$p_install,\"pods\":$p_pods,\"helmTest\":\"passed\",\"helmTestMs\":$p_test}}"
else
  pv_pool 10
  install prod "$NS" "${PROD_SETS[@]}" >/dev/null
fi
kill "$LB_PID" 2>/dev/null || true

# ---------------------------------------------------------------- step 2
EDGE_IP=$(svc_ip "$REL-edge")
OCM_IP=$(svc_ip "$REL-ocm")
[ -n "$EDGE_IP" ] && [ -n "$OCM_IP" ] || fail "services $REL-edge / $REL-ocm have no ClusterIP"
(cd "$K8S_ROOT/scripts/k8s/drillplay" && GOWORK=off CGO_ENABLED=0 go build -o "$WORK/drillplay" .)
t=$(now_ms)
"$WORK/drillplay" -listen "$PLAY_API" -copies 2 \
  -publish "rtmp://$EDGE_IP:1935/$STREAM" \
  -play "rtmp://$EDGE_IP:1935/$STREAM" \
  -play "http://$EDGE_IP:8080/$STREAM.flv" \
  -play "http://$EDGE_IP:8080/$STREAM.m3u8" >"$WORK/drillplay.log" 2>&1 &
DRILLPLAY_PID=$!
BG+=($DRILLPLAY_PID)
wait_for 90 "every player playing through the edge Service" curl -fsS "http://$PLAY_API/ready"
first_play=$(( $(now_ms) - t ))
S=livecluster.ocm.v1.OCMService
grpcurl -plaintext -d '{"pageSize":50}' "$OCM_IP:7000" "$S/ListStreams" >"$WORK/list.json" || fail "grpcurl ListStreams through $OCM_IP:7000"
jq -e '.streams[]? | select(.key.name=="drill")' "$WORK/list.json" >/dev/null || { cat "$WORK/list.json" >&2; fail "the OCM does not list $STREAM"; }
owner() {
  grpcurl -plaintext -d '{"key":{"app":"live","name":"drill"}}' "$OCM_IP:7000" "$S/LookupStream" 2>/dev/null |
    jq -r '.stream.ownerNodeId // .ownerNodeId // empty'
}
OWNER=$(owner)
# A baseline: what the players see when nothing happens (HLS arrives in
# segments, so its normal gap is about a segment).
curl -fsS -X POST "http://$PLAY_API/reset"
sleep 15
curl -fsS "http://$PLAY_API/stats" >"$WORK/base.json"
base=$(jq -c 'group_by(.name | split("#")[0]) | map({key: (.[0].name | split("#")[0]), value: (map(.maxGapMs) | max)}) | from_entries' "$WORK/base.json")
emit "{\"step\":2,\"name\":\"publish-and-play\",\"edgeClusterIP\":\"$EDGE_IP\",\"ocmClusterIP\":\"$OCM_IP\",
  \"players\":$(jq 'map(select(.name!="publisher")) | length' "$WORK/base.json"),\"allPlayingMs\":$first_play,
  \"grpcurlListsStream\":true,\"owner\":\"$OWNER\",\"baselineMaxGapMs\":$base,
  \"baselineDisconnects\":$(jq 'map(.disconnects) | add' "$WORK/base.json")}"

# window_stats: the players' figures since the last reset, as JSON.
window_stats() {
  curl -fsS "http://$PLAY_API/stats" | jq -c '{
    playerDisconnects: (map(select(.name!="publisher") | .disconnects) | add),
    publisherDisconnects: (map(select(.name=="publisher") | .disconnects) | add // 0),
    maxStallMs: (map(select(.name!="publisher")) | group_by(.name | split("#")[0]) | map({key: (.[0].name | split("#")[0]), value: (map(.maxGapMs) | max)}) | from_entries),
    publisherMaxStallMs: (map(select(.name=="publisher") | .maxGapMs) | max),
    outages: [.[] | .name as $n | .outages[] | {player: $n, gapMs, reason: (.reason | .[0:120])}]}'
}

# watch_pods COMPONENT FILE: pod watch events (to read each old pod's exit
# code before the object is gone) and the logs of its current pods.
watch_pods() {
  kc -n "$NS" get pods -l "$(sel "$1")" -w -o json --output-watch-events >"$2.watch" 2>/dev/null &
  BG+=($!)
  local p
  for p in $(pods_of "$1"); do
    kc -n "$NS" logs -f "$p" >"$2.log.$p" 2>/dev/null &
    BG+=($!)
  done
}
# exits_of FILE OLD-UIDS: each old pod's exit code, delete-to-exit time and
# the drain time its log reports.
exits_of() {
  local f=$1 uids=$2 name uid
  while read -r name uid; do
    jq -c --arg uid "$uid" --arg pod "$name" -s '
      [.[] | .object | select(.metadata.uid == $uid)] as $ev
      | ($ev | map(select(.metadata.deletionTimestamp != null)) | first | .metadata) as $dm
      # deletionTimestamp is the deadline (request + grace period).
      | (if $dm then (($dm.deletionTimestamp | fromdateiso8601) - ($dm.deletionGracePeriodSeconds // 0)) else null end) as $del
      | ($ev | map(.status.containerStatuses[]? | .state.terminated // empty) | last) as $term
      | {pod: $pod, exitCode: ($term.exitCode // null), reason: ($term.reason // null),
         deleteToExitS: (if $term and $del then (($term.finishedAt | fromdateiso8601) - $del) else null end)}' "$f.watch" |
      jq -c --argjson drain "$(grep -h '"drain complete, exiting"' "$f.log.$name" 2>/dev/null | tail -1 | jq '.elapsed_ms // null' 2>/dev/null || echo null)" \
        '. + {drainMsFromLog: $drain}'
  done <<<"$uids" | jq -s -c .
}

# rollout_step STEP NAME KIND COMPONENT
rollout_step() {
  local step=$1 name=$2 kind=$3 comp=$4 before t secs
  before=$(uids_of "$comp")
  watch_pods "$comp" "$WORK/step$step"
  sleep 1
  curl -fsS -X POST "http://$PLAY_API/reset"
  t=$(now_ms)
  kc -n "$NS" rollout restart "$kind/$REL-$comp" >/dev/null
  kc -n "$NS" rollout status "$kind/$REL-$comp" --timeout=600s >/dev/null || fail "rollout of $kind/$REL-$comp"
  secs=$(( $(now_ms) - t ))
  # The rollout is "done" when the new pods are Ready; the old ones may
  # still be draining their players. Measure until they are gone.
  local uid end; end=$(( $(date +%s) + 180 ))
  for uid in $(awk '{print $2}' <<<"$before"); do
    while kc -n "$NS" get pods -l "$(sel "$comp")" -o jsonpath='{.items[*].metadata.uid}' | grep -qw "$uid"; do
      [ "$(date +%s)" -lt "$end" ] || fail "old $comp pods still there 180 s after the rollout"
      sleep 1
    done
  done
  local gone_ms=$(( $(now_ms) - t ))
  wait_for 60 "players playing again after the $comp rollout" curl -fsS "http://$PLAY_API/ready"
  sleep 5
  emit "$(jq -c -n --argjson s "$step" --arg name "$name" --argjson ms "$secs" \
    --argjson w "$(window_stats)" --argjson pods "$(exits_of "$WORK/step$step" "$before")" \
    --argjson gone "$gone_ms" \
    '{step: $s, name: $name, rolloutMs: $ms, oldPodsGoneMs: $gone} + $w + {pods: $pods}')"
}

want 3 && rollout_step 3 origin-rollout statefulset origin
want 4 && rollout_step 4 edge-rollout deployment edge

# ---------------------------------------------------------------- step 5
# reload_count POD RESULT: livecluster_config_reload_total{result=...} of a
# pod. Its IP comes from POD_IP, filled once at the start of step 5 (the
# step restarts no pod, and checks it): a kubectl per pod per poll cost
# more CPU than the reloads being waited for.
declare -A POD_IP
reload_count() {
  curl -fsS --max-time 3 "http://${POD_IP[$1]:-$(pod_ip "$1")}:1985/metrics" |
    awk -v r="result=\"$2\"" '$1 ~ /^livecluster_config_reload_total\{/ && index($1, r) {print $2; f=1} END {if (!f) print 0}'
}
cm_of() { kc -n "$NS" get cm -l "$(sel "$1")" -o json | jq -r '.items[] | select(.data["config.yaml"] != null) | .metadata.name' | head -1; }
set_cm() { # CM FILE
  kc -n "$NS" patch cm "$1" --type merge -p "$(jq -n --rawfile c "$2" '{data: {"config.yaml": $c}}')" >/dev/null
}
# wait_reloads RESULT SECONDS POD=COUNT...: until each pod's counter passed COUNT.
wait_reloads() {
  local result=$1 secs=$2 end pc p c pending; shift 2
  end=$(( $(date +%s) + secs ))
  while :; do
    pending=()
    for pc in "$@"; do
      p=${pc%=*}; c=${pc#*=}
      [ "$(reload_count "$p" "$result" 2>/dev/null || echo 0)" -gt "$c" ] 2>/dev/null || pending+=("$p")
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    [ "$(date +%s)" -lt "$end" ] || fail "config reload ($result) not seen within ${secs}s in ${pending[*]}"
    sleep 1
  done
}
if want 5; then
  curl -fsS -X POST "http://$PLAY_API/reset"
  restarts0=$(restarts_of)
  comps=(ocm origin edge)
  declare -A CM ORIG
  succ=(); fails=()
  for c in "${comps[@]}"; do
    CM[$c]=$(cm_of "$c"); [ -n "${CM[$c]}" ] || fail "no ConfigMap with config.yaml for $c"
    kc -n "$NS" get cm "${CM[$c]}" -o json | jq -r '.data["config.yaml"]' >"$WORK/$c.orig.yaml"
    for p in $(pods_of "$c"); do
      POD_IP[$p]=$(pod_ip "$p")
      succ+=("$p=$(reload_count "$p" success)"); fails+=("$p=$(reload_count "$p" failure)")
    done
  done
  # Live edit: log level debug everywhere; on the origins also hls.enabled
  # (the origin's live HLS key; it applies to publishes that start after).
  t=$(now_ms)
  for c in "${comps[@]}"; do
    "$WORK/drillplay" yamlset "$WORK/$c.orig.yaml" log.level=debug \
      $([ "$c" = origin ] && echo hls.enabled=false) >"$WORK/$c.live.yaml"
    set_cm "${CM[$c]}" "$WORK/$c.live.yaml"
  done
  wait_reloads success 180 "${succ[@]}"
  live_ms=$(( $(now_ms) - t ))
  # The logs are read (one kubectl each, at once) while the next edit
  # propagates, and each read is done before the edit after it: the last
  # "config reloaded" line must still be the live edit's. The reload line
  # must name the keys it applied.
  read_logs() { # OUT SINCE: each release pod's log since SINCE in OUT.<pod>
    local p pids=()
    for p in $(kc -n "$NS" get pods -l "app.kubernetes.io/instance=$REL" -o name); do
      kc -n "$NS" logs "$p" --since="$2" >"$1.${p#pod/}" 2>/dev/null &
      pids+=($!)
    done
    # Only these: a bare wait would wait for the players and watches too.
    [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}" || true
  }
  read_logs "$WORK/step5-live" 5m &
  live_logs=$!
  # Invalid edit: refused, pods stay Ready, nothing restarts.
  for c in "${comps[@]}"; do
    "$WORK/drillplay" yamlset "$WORK/$c.orig.yaml" log.level=loud >"$WORK/$c.bad.yaml"
    set_cm "${CM[$c]}" "$WORK/$c.bad.yaml"
  done
  t=$(now_ms)
  wait_reloads failure 180 "${fails[@]}"
  bad_ms=$(( $(now_ms) - t ))
  sleep 3
  all_ready || fail "pods not Ready after an invalid ConfigMap edit"
  wait "$live_logs" || true
  read_logs "$WORK/step5-bad" 5m
  applied=$(for c in "${comps[@]}"; do for p in $(pods_of "$c"); do
      grep '"config reloaded"' "$WORK/step5-live.$p" | tail -1 | jq -c --arg p "$p" '{pod: $p, changed}'
    done; done | jq -s -c .)
  # DEBUG lines: the level was info before the live edit, so every one
  # came after it.
  debug_lines=$(cat "$WORK"/step5-live.* | grep -c '"level":"DEBUG"' || true)
  refused=$(cat "$WORK"/step5-bad.* | grep -c 'config reload refused' || true)
  # Back to the original, and wait until every pod has it: the next steps
  # need HLS on again (hls.enabled applies to the next publish).
  succ=()
  for c in "${comps[@]}"; do
    for p in $(pods_of "$c"); do succ+=("$p=$(reload_count "$p" success)"); done
  done
  for c in "${comps[@]}"; do set_cm "${CM[$c]}" "$WORK/$c.orig.yaml"; done
  wait_reloads success 180 "${succ[@]}"
  restarts1=$(restarts_of)
  [ "$restarts0" = "$restarts1" ] || fail "a ConfigMap edit restarted a container: $restarts0 -> $restarts1"
  emit "$(jq -c -n --argjson ms "$live_ms" --argjson bad "$bad_ms" --argjson applied "$applied" \
    --argjson restarts "$restarts1" --argjson dbg "${debug_lines:-0}" --argjson refused "${refused:-0}" \
    --argjson w "$(window_stats)" \
    '{step: 5, name: "configmap-live-edit", liveEditAppliedInAllPodsMs: $ms, reloadLines: $applied,
      debugLinesAfterEdit: $dbg, invalidEditRefusedInAllPodsMs: $bad, refusedLogLines: $refused,
      allReadyAfterInvalidEdit: true, restartCounts: $restarts, playerDisconnects: $w.playerDisconnects}')"
fi

# ---------------------------------------------------------------- step 6
if want 6; then
  OWNER=$(owner)
  [ -n "$OWNER" ] || fail "no owner of $STREAM"
  curl -fsS -X POST "http://$PLAY_API/reset"
  t=$(now_ms)
  kc -n "$NS" delete pod "$OWNER" --grace-period=0 --force >/dev/null 2>&1
  new=""; end=$(( $(date +%s) + 90 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    new=$(owner || true)
    [ -n "$new" ] && [ "$new" != "$OWNER" ] && break
    # The same name comes back (StatefulSet): a new owner may be the new pod.
    [ -n "$new" ] && [ $(( $(now_ms) - t )) -gt 5000 ] && break
    sleep 0.5
  done
  owned_ms=$(( $(now_ms) - t ))
  ready="true"
  curl_ready() { curl -fsS "http://$PLAY_API/ready"; }
  end=$(( $(date +%s) + 90 ))
  until curl_ready >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { ready="false"; break; }
    sleep 0.5
  done
  playing_ms=$(( $(now_ms) - t ))
  sleep 5
  kc -n "$NS" rollout status "statefulset/$REL-origin" --timeout=180s >/dev/null || fail "origin StatefulSet not back after the forced delete"
  emit "$(jq -c -n --arg old "$OWNER" --arg new "$new" --argjson o "$owned_ms" --argjson p "$playing_ms" \
    --argjson ready "$ready" --argjson w "$(window_stats)" \
    '{step: 6, name: "force-delete-owner", deletedOwner: $old, ownerAfter: $new, ownedAgainMs: $o,
      allPlayingAgain: $ready, allPlayingAgainMs: $p} + $w')"
fi

# ---------------------------------------------------------------- step 7
if want 7; then
  declare -A B A
  for c in ocm origin edge etcd; do B[$c]=$(uids_of "$c"); done
  t=$(now_ms)
  helm upgrade "$REL" "$CHART" --namespace "$NS" "${HELM_COMMON[@]}" --reuse-values --set origin.config.hls.window=8 \
    --wait --timeout 600s >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log" >&2; fail "helm upgrade"; }
  kc -n "$NS" rollout status "statefulset/$REL-origin" --timeout=300s >/dev/null || fail "origin rollout after upgrade"
  up_ms=$(( $(now_ms) - t ))
  rolled=()
  for c in ocm origin edge etcd; do
    A[$c]=$(uids_of "$c")
    [ "${B[$c]}" = "${A[$c]}" ] || rolled+=("$c")
  done
  w=$(window_stats)
  # Stop the players before the release goes away.
  kill "$DRILLPLAY_PID" 2>/dev/null || true
  t=$(now_ms)
  uninstall
  un_ms=$(( $(now_ms) - t ))
  left=$(kc -n "$NS" get all,cm,secret,pvc,pdb,hpa,sa,role,rolebinding,networkpolicy,ingress -o name 2>/dev/null |
    grep -vxE 'configmap/kube-root-ca.crt|serviceaccount/default' | jq -R . | jq -s -c .)
  emit "$(jq -c -n --argjson ms "$up_ms" --argjson un "$un_ms" --argjson left "$left" \
    --arg rolled "${rolled[*]}" '{step: 7, name: "upgrade-and-uninstall", changed: "origin.config.hls.window",
      upgradeMs: $ms, rolledComponents: ($rolled | split(" ") | map(select(. != ""))),
      uninstallMs: $un, leftAfterUninstall: $left}')"
  [ "${rolled[*]}" = origin ] || fail "helm upgrade of an origin-only value rolled: ${rolled[*]:-nothing}"
  if jq -e 'map(select(startswith("persistentvolumeclaim/") | not)) | length > 0' <<<"$left" >/dev/null; then
    fail "helm uninstall left $left"
  fi
  # Not waited for: scripts/k8s/down.sh removes the whole cluster next, and
  # a drill run again on this cluster first waits for them to be gone.
  kc delete namespace "$NS" "$NS_DEFAULT" --ignore-not-found --wait=false >/dev/null ||
    fail "deleting namespaces $NS and $NS_DEFAULT"
  kc delete pv -l lck8s=drill --wait=false >/dev/null || true
fi
echo "drill: all steps passed; figures in $RESULTS" >&2
