#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/livecluster without a cluster: builds
# helm once (scripts/k8s/build.sh helm, cached by version), then
# `helm lint --strict` and `helm template` with the defaults and each
# ci/*.yaml values file, then the Go asserts of deploy/helm/charttest
# (schema refusals, grace periods, probes, restart-only checksums, etcd
# wiring) against that helm.
#
#   scripts/test-chart.sh
#
# The helm built here has no Kubernetes version stamped in, so it would
# assume v1.20 and refuse the chart's kubeVersion (>=1.27): every command
# passes --kube-version.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBE_VERSION=${KUBE_VERSION:-1.34.2}
CHART=deploy/helm/livecluster

scripts/k8s/build.sh helm
HELM="$(scripts/k8s/build.sh --print-dirs | grep '/helm@')/helm"
[ -x "$HELM" ] || { echo "test-chart: helm not built at $HELM" >&2; exit 1; }
"$HELM" version --short

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for values in "" "$CHART"/ci/*.yaml; do
  name=${values:+$(basename "$values")}
  name=${name:-chart defaults}
  args=()
  [ -n "$values" ] && args=(-f "$values")
  echo "--- $name"
  "$HELM" lint --strict "$CHART" --kube-version "$KUBE_VERSION" "${args[@]}"
  "$HELM" template lc "$CHART" --namespace media --kube-version "$KUBE_VERSION" "${args[@]}" >"$out/render.yaml"
  echo "rendered $(grep -c '^kind:' "$out/render.yaml") objects: $(grep '^kind:' "$out/render.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}')"
done

echo "--- asserts (deploy/helm/charttest)"
(cd deploy/helm/charttest && LIVECLUSTER_HELM="$HELM" go test -count=1 ./...)
