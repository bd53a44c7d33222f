#!/usr/bin/env bash
# Imports images from Docker into the containerd of the cluster of
# scripts/k8s/up.sh (pods use imagePullPolicy: Never: there is no registry).
#
#   scripts/k8s/load-images.sh                 every livecluster/* image in Docker
#   scripts/k8s/load-images.sh IMAGE...        the named ones
#
# livecluster/origin:v1 is docker.io/livecluster/origin:v1 to containerd.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -S "$CTRD_SOCK" ] || k8s_die "no cluster containerd at $CTRD_SOCK: run scripts/k8s/up.sh"
imgs=("$@")
if [ ${#imgs[@]} -eq 0 ]; then
  mapfile -t imgs < <(docker images --format '{{.Repository}}:{{.Tag}}' | grep '^livecluster/' | grep -v ':<none>$' | sort -u)
fi
[ ${#imgs[@]} -gt 0 ] || k8s_die "no livecluster/* image in Docker: run scripts/images.sh"
s=$(date +%s)
docker save "${imgs[@]}" | ctr -a "$CTRD_SOCK" -n k8s.io images import - >/dev/null
k8s_log "imported ${imgs[*]} in $(( $(date +%s) - s )) s"
