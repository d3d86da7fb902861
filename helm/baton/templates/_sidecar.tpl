{{/*
The baton container and what it needs in a pod. Rules:
- Every `baton sidecar` option is an argument --flag=value; the chart sets the addresses,
  identity, peers, key, drain and mode from their values, then `config` in name order, then
  extraArgs. $(POD_NAME) and $(POD_IP) are expanded by the kubelet from the downward API.
- The session API surfaces bind 127.0.0.1 (the pod's containers only); peer and metrics bind
  listenHost, since other pods, the kubelet and Prometheus reach them on the pod IP.
- Names added to a pod start with "baton" so they do not collide with the application's.
*/}}

{{- define "baton.args" -}}
{{- $v := .values -}}
{{- $p := $v.ports -}}
- sidecar
- --node-id=$(POD_NAME)
- --api-listen=127.0.0.1:{{ $p.api }}
- --http-listen={{ if gt (int $p.http) 0 }}127.0.0.1:{{ $p.http }}{{ else }}off{{ end }}
{{- if gt (int $p.resp) 0 }}
- --resp-listen=127.0.0.1:{{ $p.resp }}
{{- end }}
- --metrics-listen={{ include "baton.hostPort" (list $v.listenHost $p.metrics) }}
- --peer-listen={{ include "baton.hostPort" (list $v.listenHost $p.peer) }}
- --advertise-address=$(POD_IP):{{ $p.peer }}
- --peers-dns={{ include "baton.peersService" . }}.{{ .top.Release.Namespace }}.svc.{{ $v.clusterDomain }}:{{ $p.peer }}
- --replicas={{ $v.replication.replicas }}
- --cluster-key-file=/etc/baton/cluster-key/{{ $v.clusterKey.secretKey }}
- --drain-timeout-seconds={{ $v.drainTimeoutSeconds }}
{{- with $v.replication.multicast }}
{{- if .enabled }}
- --multicast={{ .group }}:{{ .port }}
- --multicast-interface=$(POD_IP)
- --multicast-ttl={{ .ttl }}
{{- end }}
{{- end }}
{{- if eq $v.mode "proxy" }}
- --proxy-listen={{ include "baton.hostPort" (list $v.listenHost $p.proxy) }}
- --proxy-upstream={{ $v.proxy.upstream }}
{{- with $v.proxy.sessionCookie }}
- --session-cookie={{ . }}
{{- end }}
{{- if $v.proxy.tls.secretName }}
- --tls-cert-file=/etc/baton/tls/tls.crt
- --tls-key-file=/etc/baton/tls/tls.key
{{- with $v.proxy.tls.clientCaKey }}
- --tls-client-ca-file=/etc/baton/tls/{{ . }}
{{- end }}
{{- else if $v.proxy.tls.selfSigned }}
- --tls-self-signed
{{- end }}
{{- end }}
{{- range $name := keys $v.config | sortAlpha }}
{{- $value := index $v.config $name }}
{{- if kindIs "bool" $value }}
{{- /* A switch takes no value on the command line: true gives the flag, false leaves it out. */}}
{{- if $value }}
- --{{ $name }}
{{- end }}
{{- else }}
- --{{ $name }}={{ $value }}
{{- end }}
{{- end }}
{{- range $v.extraArgs }}
- {{ . }}
{{- end }}
{{- end -}}

{{/*
The heap limit (MiB) the container's NODE_OPTIONS sets: heapLimitMb when positive; when 0,
4 x config.max-memory-mb (the sidecar's default budget is 512), at least 512; empty for -1
or an unlimited budget.
*/}}
{{- define "baton.heapLimitMb" -}}
{{- $v := .values -}}
{{- $limit := int $v.heapLimitMb -}}
{{- if gt $limit 0 -}}
{{ $limit }}
{{- else if eq $limit 0 -}}
{{- $config := default dict $v.config -}}
{{- $budget := 512 -}}
{{- if hasKey $config "max-memory-mb" }}{{ $budget = int (index $config "max-memory-mb") }}{{ end -}}
{{- if gt $budget 0 -}}
{{ max 512 (mul 4 $budget) }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "baton.container" -}}
{{- $v := .values -}}
name: baton
image: {{ printf "%s:%s" $v.image.repository $v.image.tag | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
{{- if $v.nativeSidecar }}
restartPolicy: Always
{{- end }}
args:
{{- include "baton.args" . | nindent 2 }}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_IP
    valueFrom:
      fieldRef:
        fieldPath: status.podIP
{{- $heap := include "baton.heapLimitMb" . }}
{{- $ownNodeOptions := false }}
{{- range $v.extraEnv }}
{{- if eq .name "NODE_OPTIONS" }}{{ $ownNodeOptions = true }}{{ end }}
{{- end }}
{{- if and (ne $heap "") (not $ownNodeOptions) }}
  - name: NODE_OPTIONS
    value: --max-old-space-size={{ $heap }}
{{- end }}
{{- with $v.extraEnv }}
{{- toYaml . | nindent 2 }}
{{- end }}
ports:
  - name: baton-peer-udp
    containerPort: {{ $v.ports.peer }}
    protocol: UDP
  - name: baton-peer
    containerPort: {{ $v.ports.peer }}
    protocol: TCP
  - name: baton-metrics
    containerPort: {{ $v.ports.metrics }}
    protocol: TCP
{{- if $v.replication.multicast.enabled }}
  - name: baton-mcast
    containerPort: {{ $v.replication.multicast.port }}
    protocol: UDP
{{- end }}
{{- if eq $v.mode "proxy" }}
  - name: baton-proxy
    containerPort: {{ $v.ports.proxy }}
    protocol: TCP
{{- end }}
startupProbe:
  httpGet:
    path: /readyz
    port: baton-metrics
  periodSeconds: {{ $v.probes.startup.periodSeconds }}
  failureThreshold: {{ $v.probes.startup.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: baton-metrics
  periodSeconds: {{ $v.probes.readiness.periodSeconds }}
  failureThreshold: {{ $v.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: baton-metrics
  periodSeconds: {{ $v.probes.liveness.periodSeconds }}
  failureThreshold: {{ $v.probes.liveness.failureThreshold }}
  timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
{{- if gt (int $v.preStopSleepSeconds) 0 }}
lifecycle:
  preStop:
    exec:
      command: ["sleep", "{{ $v.preStopSleepSeconds }}"]
{{- end }}
resources:
  {{- toYaml $v.resources | nindent 2 }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: baton-cluster-key
    mountPath: /etc/baton/cluster-key
    readOnly: true
  - name: baton-tmp
    mountPath: /tmp
{{- if and (eq $v.mode "proxy") $v.proxy.tls.secretName }}
  - name: baton-tls
    mountPath: /etc/baton/tls
    readOnly: true
{{- end }}
{{- with $v.extraVolumeMounts }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "baton.volumes" -}}
{{- $v := .values -}}
- name: baton-cluster-key
  secret:
    secretName: {{ include "baton.clusterKeySecret" . }}
- name: baton-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if and (eq $v.mode "proxy") $v.proxy.tls.secretName }}
- name: baton-tls
  secret:
    secretName: {{ $v.proxy.tls.secretName }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "baton.topologySpreadConstraints" -}}
{{- $ctx := . -}}
{{- range .values.topologySpread.topologyKeys }}
- maxSkew: {{ $ctx.values.topologySpread.maxSkew }}
  topologyKey: {{ . }}
  whenUnsatisfiable: {{ $ctx.values.topologySpread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "baton.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
baton.inject: the pod template "pod" (a dict: metadata and spec, as you would write it under
a Deployment's spec.template) with baton added: the cluster label, the baton container (an
init container with restartPolicy Always, or a plain container after yours), its volumes,
topology spread, and terminationGracePeriodSeconds raised to what the drain needs. Use:
  template:
    {{- include "baton.inject" (dict "top" $ "values" .Values.baton "pod" (fromYaml (include "myapp.pod" .))) | nindent 4 }}
*/}}
{{- define "baton.inject" -}}
{{- $pod := deepCopy (default dict .pod) -}}
{{- $meta := default dict $pod.metadata -}}
{{- $labels := merge (fromYaml (include "baton.selectorLabels" .)) (default dict $meta.labels) -}}
{{- $_ := set $meta "labels" $labels -}}
{{- $_ := set $pod "metadata" $meta -}}
{{- $spec := default dict $pod.spec -}}
{{- $container := fromYaml (include "baton.container" .) -}}
{{- if .values.nativeSidecar -}}
{{- $_ := set $spec "initContainers" (append (default list $spec.initContainers) $container) -}}
{{- else -}}
{{- $_ := set $spec "containers" (append (default list $spec.containers) $container) -}}
{{- end -}}
{{- $_ := set $spec "volumes" (concat (default list $spec.volumes) (fromYamlArray (include "baton.volumes" .))) -}}
{{- if .values.topologySpread.enabled -}}
{{- $_ := set $spec "topologySpreadConstraints" (concat (default list $spec.topologySpreadConstraints) (fromYamlArray (include "baton.topologySpreadConstraints" .))) -}}
{{- end -}}
{{- $grace := int (include "baton.terminationGracePeriodSeconds" .) -}}
{{- $_ := set $spec "terminationGracePeriodSeconds" (max $grace (int (default 0 $spec.terminationGracePeriodSeconds))) -}}
{{- $_ := set $pod "spec" $spec -}}
{{- toYaml $pod -}}
{{- end -}}
