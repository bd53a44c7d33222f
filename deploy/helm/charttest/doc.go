// Package charttest holds the tests of the Helm chart in
// deploy/helm/livecluster: they render it with a real helm (LIVECLUSTER_HELM,
// built by scripts/k8s/build.sh helm) and check what would break a
// deployment: the schema, the computed grace periods, the probes, the
// restart-only config checksum, the etcd wiring. scripts/test-chart.sh runs
// them after `helm lint --strict`.
package charttest
