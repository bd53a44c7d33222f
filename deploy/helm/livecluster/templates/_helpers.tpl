{{/*
Names, in the style of ingress-nginx and cert-manager: the chart name
(nameOverride), the fullname (fullnameOverride, else "<release>-<chart>",
or the release name when it already contains the chart name), both cut to
63 characters for DNS.
*/}}
{{- define "livecluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "livecluster.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "livecluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<fullname>-<component>"; call with (dict "root" $ "component" "ocm"). */}}
{{- define "livecluster.componentName" -}}
{{- printf "%s-%s" (include "livecluster.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "livecluster.labels" -}}
helm.sh/chart: {{ include "livecluster.chart" . }}
app.kubernetes.io/name: {{ include "livecluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: livecluster
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of a component: (dict "root" $ "component" "ocm"). */}}
{{- define "livecluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "livecluster.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of a component's objects: (dict "root" $ "component" "ocm"). */}}
{{- define "livecluster.componentLabels" -}}
{{ include "livecluster.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "livecluster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "livecluster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag" of a component: (dict "root" $ "image" .Values.ocm.image). */}}
{{- define "livecluster.image" -}}
{{- $tag := .root.Values.global.image.tag | default .image.tag | default .root.Chart.AppVersion }}
{{- printf "%s:%s" .image.repository (toString $tag) }}
{{- end }}

{{- define "livecluster.pullPolicy" -}}
{{- .root.Values.global.image.pullPolicy | default .image.pullPolicy }}
{{- end }}

{{- define "livecluster.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The namespace's service domain: "<ns>.svc.<clusterDomain>". */}}
{{- define "livecluster.svcDomain" -}}
{{- printf "%s.svc.%s" .Release.Namespace .Values.global.clusterDomain }}
{{- end }}

{{/*
Durations. The binaries read Go duration strings ("2.3s", "500ms", "1m30s");
the chart reads the same strings from each component's config, so the
grace period cannot disagree with what the binary will do.
"livecluster.seconds" renders a duration as seconds (a float, as text);
anything but a Go duration fails the render, naming the key.
Call with (dict "key" "origin.config.shutdown.startWait" "value" "2.3s").
*/}}
{{- define "livecluster.seconds" -}}
{{- $v := toString .value }}
{{- if not (regexMatch "^(0|([0-9]*\\.?[0-9]+(ns|us|µs|ms|s|m|h))+)$" $v) }}
{{- fail (printf "%s: %q is not a Go duration such as \"2.3s\", \"500ms\" or \"1m30s\"" .key $v) }}
{{- end }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]*\\.?[0-9]+(ns|us|µs|ms|s|m|h)" $v -1 }}
{{- $num := regexFind "^[0-9]*\\.?[0-9]+" . }}
{{- $unit := trimPrefix $num . }}
{{- $scale := get (dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "ns" 0.000000001) $unit }}
{{- $total = addf $total (mulf (float64 $num) $scale) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
terminationGracePeriodSeconds of ocm, origin and edge:
ceil(startWait + drainTimeout + finalWait + 5 s + terminationGraceMarginSeconds),
5 s being lifecycle.FinalHookTimeout (the binaries' bound on deregistering).
Call with (dict "root" $ "component" "origin" "values" .Values.origin
"config" <the merged config>).
*/}}
{{- define "livecluster.terminationGracePeriodSeconds" -}}
{{- if not (kindIs "invalid" .values.terminationGracePeriodSeconds) }}
{{- .values.terminationGracePeriodSeconds }}
{{- else }}
{{- $s := .config.shutdown }}
{{- $sum := 5.0 }}
{{- range $k := list "startWait" "drainTimeout" "finalWait" }}
{{- $sum = addf $sum (include "livecluster.seconds" (dict "key" (printf "%s.config.shutdown.%s" $.component $k) "value" (get $s $k))) }}
{{- end }}
{{- $sum = addf $sum $.root.Values.terminationGraceMarginSeconds }}
{{- ceil $sum | int }}
{{- end }}
{{- end }}

{{/* The port of a listen address such as ":1935" or "0.0.0.0:8080". */}}
{{- define "livecluster.listenPort" -}}
{{- $parts := splitList ":" (toString .) }}
{{- last $parts | int }}
{{- end }}

{{/*
The configuration files. Each is the chart's keys with the component's
`config` value merged over them (the user wins, except for the keys the
chart owns: etcd endpoints and TLS files of the OCM).
*/}}
{{- define "livecluster.ocm.config" -}}
{{- $etcd := dict "dataDir" "/data/ocm-data" }}
{{- if .Values.etcd.enabled }}
{{- $hl := include "livecluster.componentName" (dict "root" . "component" "etcd-headless") }}
{{- $sts := include "livecluster.componentName" (dict "root" . "component" "etcd") }}
{{- $eps := list }}
{{- range $i := until (int .Values.etcd.replicaCount) }}
{{- $eps = append $eps (printf "http://%s-%d.%s.%s:2379" $sts $i $hl (include "livecluster.svcDomain" $)) }}
{{- end }}
{{- $_ := set $etcd "endpoints" $eps }}
{{- else }}
{{- if not .Values.etcd.external.endpoints }}
{{- fail "etcd.external.endpoints: required when etcd.enabled is false (the chart never runs the OCM's embedded, per-process etcd: its replicas must share one store)" }}
{{- end }}
{{- $_ := set $etcd "endpoints" .Values.etcd.external.endpoints }}
{{- with .Values.etcd.external.tls }}
{{- if .enabled }}
{{- if not .secretName }}
{{- fail "etcd.external.tls.secretName: required when etcd.external.tls.enabled" }}
{{- end }}
{{- $_ := set $etcd "caFile" (printf "/etc/livecluster-etcd-tls/%s" .caKey) }}
{{- if and .certKey .keyKey }}
{{- $_ := set $etcd "certFile" (printf "/etc/livecluster-etcd-tls/%s" .certKey) }}
{{- $_ := set $etcd "keyFile" (printf "/etc/livecluster-etcd-tls/%s" .keyKey) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $gen := dict "adminListen" ":1985" "grpc" (dict "listen" ":7000") "shutdown" (dict "sigterm" "graceful") }}
{{- $_ := mergeOverwrite $gen (fromYaml (include "livecluster.securityConfig" (dict "root" . "component" "ocm"))) }}
{{- $c := mergeOverwrite $gen (deepCopy .Values.ocm.config) }}
{{- $_ := set $c "etcd" (mergeOverwrite (deepCopy (default (dict) $c.etcd)) $etcd) }}
{{- toYaml $c }}
{{- end }}

{{/*
The keys security.* sets in a component's config (docs/security.md):
(dict "root" $ "component" "ocm"|"origin"|"edge"). The component's own
`config` is merged over them.
*/}}
{{- define "livecluster.securityConfig" -}}
{{- $sec := .root.Values.security }}
{{- $c := dict }}
{{- $tls := "/etc/livecluster-tls" }}
{{- $tok := "/etc/livecluster-tokens" }}
{{- if $sec.tls.enabled }}
{{- if not (get $sec.tls .component).existingSecret }}
{{- fail (printf "security.tls.%s.existingSecret: required when security.tls.enabled" .component) }}
{{- end }}
{{- if eq .component "ocm" }}
{{- $_ := set $c "grpc" (dict "tls" (dict "certFile" (printf "%s/tls.crt" $tls) "keyFile" (printf "%s/tls.key" $tls) "clientCAFile" (printf "%s/ca.crt" $tls))) }}
{{- else }}
{{- $_ := set $c "ocm" (dict "tls" (dict "caFile" (printf "%s/ca.crt" $tls) "certFile" (printf "%s/tls.crt" $tls) "keyFile" (printf "%s/tls.key" $tls))) }}
{{- end }}
{{- if $sec.tls.adminPort }}
{{- $_ := set $c "admin" (dict "tls" (dict "certFile" (printf "%s/tls.crt" $tls) "keyFile" (printf "%s/tls.key" $tls))) }}
{{- end }}
{{- end }}
{{- if $sec.tokens.existingSecret }}
{{- $admin := default (dict) $c.admin }}
{{- $_ := set $admin "tokenFile" (printf "%s/admin" $tok) }}
{{- $_ := set $c "admin" $admin }}
{{- if eq .component "ocm" }}
{{- $_ := set $c "auth" (dict "tokens" (list
  (dict "identity" "origin:*" "tokenFile" (printf "%s/origin" $tok))
  (dict "identity" "edge:*" "tokenFile" (printf "%s/edge" $tok))
  (dict "identity" "admin" "tokenFile" (printf "%s/admin" $tok)))) }}
{{- else }}
{{- $ocm := default (dict) $c.ocm }}
{{- $_ := set $ocm "tokenFile" (printf "%s/%s" $tok .component) }}
{{- $_ := set $c "ocm" $ocm }}
{{- end }}
{{- end }}
{{- if and (eq .component "ocm") $sec.openReads }}
{{- $_ := set $c "auth" (merge (default (dict) $c.auth) (dict "openReads" true)) }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* Volume mounts of the security Secrets: (dict "root" $ "component" ...). */}}
{{- define "livecluster.securityMounts" -}}
{{- if .root.Values.security.tls.enabled }}
- name: livecluster-tls
  mountPath: /etc/livecluster-tls
  readOnly: true
{{- end }}
{{- if .root.Values.security.tokens.existingSecret }}
- name: livecluster-tokens
  mountPath: /etc/livecluster-tokens
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes of the security Secrets, mounted as directories (never subPath)
so that a renewal reaches the files through the ..data swap. */}}
{{- define "livecluster.securityVolumes" -}}
{{- $sec := .root.Values.security }}
{{- if $sec.tls.enabled }}
- name: livecluster-tls
  secret:
    secretName: {{ (get $sec.tls .component).existingSecret }}
{{- end }}
{{- if $sec.tokens.existingSecret }}
- name: livecluster-tokens
  secret:
    secretName: {{ $sec.tokens.existingSecret }}
    items:
      {{- if eq .component "ocm" }}
      - {key: origin, path: origin}
      - {key: edge, path: edge}
      {{- else }}
      - {key: {{ .component }}, path: {{ .component }}}
      {{- end }}
      - {key: admin, path: admin}
{{- end }}
{{- end }}

{{- define "livecluster.origin.config" -}}
{{- $ocm := printf "%s:%v" (include "livecluster.componentName" (dict "root" . "component" "ocm")) .Values.ocm.service.grpcPort }}
{{- $gen := dict "adminListen" ":1985" "ocm" (dict "address" $ocm) "rtmp" (dict "listen" ":1935") "http" (dict "listen" ":8080") "hls" (dict "dir" "/data/hls") "shutdown" (dict "sigterm" "graceful") }}
{{- $_ := mergeOverwrite $gen (fromYaml (include "livecluster.securityConfig" (dict "root" . "component" "origin"))) }}
{{- toYaml (mergeOverwrite $gen (deepCopy .Values.origin.config)) }}
{{- end }}

{{- define "livecluster.edge.config" -}}
{{- $ocm := printf "%s:%v" (include "livecluster.componentName" (dict "root" . "component" "ocm")) .Values.ocm.service.grpcPort }}
{{- $gen := dict "adminListen" ":1985" "ocm" (dict "address" $ocm) "rtmp" (dict "listen" ":1935") "http" (dict "listen" ":8080") "shutdown" (dict "sigterm" "graceful") }}
{{- $_ := mergeOverwrite $gen (fromYaml (include "livecluster.securityConfig" (dict "root" . "component" "edge"))) }}
{{- toYaml (mergeOverwrite $gen (deepCopy .Values.edge.config)) }}
{{- end }}

{{/*
The keys each binary reloads live (node/config CommonLive, origin
internal/config Live, the edge's Loader Live, the OCM's loader Live). A
trailing ".*" means the whole subtree. Keep in step with the Go lists:
scripts/test-chart.sh checks this list against them.
*/}}
{{- define "livecluster.liveKeys" -}}
{{- $common := list "log.level" "shutdown.*" }}
{{- $limits := list "limits.maxConns" "limits.maxConnsPerIP" "limits.maxStreams" "limits.maxPlayersPerStream" "limits.maxPublishBitrate" "limits.publishBitrateWindow" }}
{{- $own := get (dict
  "ocm" (list "auth.tokens")
  "origin" (concat (list "ocm.claimTimeout" "rtmp.publishReadWindow" "hls.enabled" "hub.mergeWindow" "auth.*") $limits)
  "edge" (concat (list "rtmp.publishReadWindow" "edge.idleTimeout" "edge.waitTimeout" "edge.ownerLossHold" "edge.mergeWindow" "edge.upstream.*" "edge.forward.*" "auth.*") $limits)
  ) . }}
{{- concat $common $own | toJson }}
{{- end }}

{{/*
The checksum of a component's restart-only configuration: the rendered
config with every live key removed. A live edit (log.level, ...) leaves the
pod template unchanged, so Kubernetes does not roll the pods and the
binaries reload the ConfigMap through its ..data swap; a restart-only edit
changes the checksum annotation and rolls them.
Call with (dict "component" "origin" "config" <rendered YAML>).
*/}}
{{- define "livecluster.restartOnlyChecksum" -}}
{{- $c := fromYaml .config }}
{{- range $key := fromJsonArray (include "livecluster.liveKeys" .component) }}
{{- $path := splitList "." (trimSuffix ".*" $key) }}
{{- $parent := $c }}
{{- range $p := initial $path }}
{{- if kindIs "map" $parent }}
{{- $parent = get $parent $p }}
{{- end }}
{{- end }}
{{- if kindIs "map" $parent }}
{{- $_ := unset $parent (last $path) }}
{{- end }}
{{- end }}
{{- /* Maps emptied by the removals go too: an edit of edge.idleTimeout alone
must hash like no edge key at all (the config is at most 3 levels deep). */}}
{{- range $k1, $v1 := $c }}
{{- if kindIs "map" $v1 }}
{{- range $k2, $v2 := $v1 }}
{{- if and (kindIs "map" $v2) (not $v2) }}
{{- $_ := unset $v1 $k2 }}
{{- end }}
{{- end }}
{{- if not $v1 }}
{{- $_ := unset $c $k1 }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $c | sha256sum }}
{{- end }}

{{/* Preferred or required pod anti-affinity over nodes, or the user's affinity. */}}
{{- define "livecluster.affinity" -}}
{{- $v := .values }}
{{- if $v.affinity }}
affinity:
  {{- toYaml $v.affinity | nindent 2 }}
{{- else if eq $v.podAntiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "livecluster.selectorLabels" . | nindent 14 }}
{{- else if eq $v.podAntiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "livecluster.selectorLabels" . | nindent 12 }}
{{- end }}
{{- end }}

{{/*
Scheduling and pod-level settings shared by every component's pod spec:
(dict "root" $ "component" "ocm" "values" .Values.ocm).
*/}}
{{- define "livecluster.podCommon" -}}
serviceAccountName: {{ include "livecluster.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automount }}
{{- include "livecluster.imagePullSecrets" .root }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- include "livecluster.affinity" . }}
{{- end }}

{{/* Pod template metadata: (dict "root" $ "component" "ocm" "values" .Values.ocm "checksum" "..."). */}}
{{- define "livecluster.podMetadata" -}}
metadata:
  labels:
    {{- include "livecluster.componentLabels" . | nindent 4 }}
    {{- with .values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or .checksum .values.podAnnotations }}
  annotations:
    {{- with .checksum }}
    checksum/config: {{ . }}
    {{- end }}
    {{- with .values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/*
The probes of ocm, origin and edge, all on the admin port. Liveness and
startup ask /healthz, which answers while the process serves its admin port
and never looks at the OCM or etcd: an OCM or etcd outage must not restart
every pod at once. Readiness asks /readyz (registered with the OCM once,
listeners up, not draining).
*/}}
{{- define "livecluster.probes" -}}
{{- /* Called with the component's rendered config: HTTPS when the admin
port has a certificate (admin.tls). */}}
{{- $scheme := "HTTP" }}
{{- if and (kindIs "map" .) .admin .admin.tls .admin.tls.certFile }}
{{- $scheme = "HTTPS" }}
{{- end }}
startupProbe:
  httpGet:
    path: /healthz
    port: admin
    scheme: {{ $scheme }}
  periodSeconds: 2
  failureThreshold: 30
  timeoutSeconds: 2
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
    scheme: {{ $scheme }}
  periodSeconds: 10
  failureThreshold: 3
  timeoutSeconds: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
    scheme: {{ $scheme }}
  periodSeconds: 2
  failureThreshold: 2
  successThreshold: 1
  timeoutSeconds: 2
{{- end }}

{{/* Volume mounts every livecluster container has. */}}
{{- define "livecluster.commonMounts" -}}
- name: config
  mountPath: /etc/livecluster
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /data
{{- end }}

{{/* Volumes every livecluster pod has: (dict "root" $ "component" "ocm"). */}}
{{- define "livecluster.commonVolumes" -}}
# A directory mount, never subPath: the kubelet swaps ..data on a ConfigMap
# edit and the binary's watcher reloads the file.
- name: config
  configMap:
    name: {{ include "livecluster.componentName" . }}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
- name: data
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{/* POD_NAME and POD_IP from the downward API (for $(POD_NAME) expansion). */}}
{{- define "livecluster.downwardEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}

{{/*
A component's PodDisruptionBudget: (dict "root" $ "component" "ocm" "values" .Values.ocm).
*/}}
{{- define "livecluster.pdb" -}}
{{- $p := .values.podDisruptionBudget }}
{{- if $p.enabled }}
{{- $min := not (kindIs "invalid" $p.minAvailable) }}
{{- $max := not (kindIs "invalid" $p.maxUnavailable) }}
{{- if eq $min $max }}
{{- fail (printf "%s.podDisruptionBudget: set exactly one of minAvailable and maxUnavailable" .component) }}
{{- end }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "livecluster.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "livecluster.componentLabels" . | nindent 4 }}
spec:
  {{- if $min }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "livecluster.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
