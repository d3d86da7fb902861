{{/*
Names and labels. Every template here takes a context dict, not the chart's root, so a
parent chart can include them for its own pods:
  (dict "top" $ "values" .Values.baton)   from a chart that has baton as a dependency
  (dict "top" $ "values" .Values)         inside this chart
"top" gives .Release and .Capabilities; "values" is baton's values. Nothing reads .Chart,
which in a parent chart would be the parent's.
*/}}

{{- define "baton.fullname" -}}
{{- $v := .values -}}
{{- if $v.fullnameOverride -}}
{{- $v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "baton" $v.nameOverride -}}
{{- if contains $name .top.Release.Name -}}
{{- .top.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .top.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The headless Service's name: --peers-dns resolves it. */}}
{{- define "baton.peersService" -}}
{{- printf "%s-peers" (include "baton.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "baton.clusterKeySecret" -}}
{{- default (printf "%s-cluster-key" (include "baton.fullname" .)) .values.clusterKey.existingSecret -}}
{{- end -}}

{{/* The one label that makes a pod a member of this baton cluster: selectors use it alone. */}}
{{- define "baton.selectorLabels" -}}
baton/cluster: {{ include "baton.fullname" . | quote }}
{{- end -}}

{{- define "baton.labels" -}}
app.kubernetes.io/name: baton
app.kubernetes.io/instance: {{ .top.Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .top.Release.Service | quote }}
app.kubernetes.io/version: {{ .values.image.tag | quote }}
{{- end -}}

{{/* host:port, with brackets for an IPv6 host. */}}
{{- define "baton.hostPort" -}}
{{- $host := index . 0 -}}
{{- if contains ":" $host -}}[{{ $host }}]:{{ index . 1 }}{{- else -}}{{ $host }}:{{ index . 1 }}{{- end -}}
{{- end -}}

{{/* Seconds the pod may take to stop: a preStop sleep, the drain, and 10 s for the process to exit and the application to stop first. */}}
{{- define "baton.terminationGracePeriodSeconds" -}}
{{- add (int .values.preStopSleepSeconds) (int .values.drainTimeoutSeconds) 10 -}}
{{- end -}}

{{/* Whether the cluster serves a kind (a CRD installed), or a value forces it: enabled is auto, true or false. */}}
{{- define "baton.wanted" -}}
{{- $enabled := index . 0 -}}
{{- if eq (toString $enabled) "auto" -}}
{{- if (index . 1).Capabilities.APIVersions.Has (index . 2) -}}true{{- end -}}
{{- else if $enabled -}}true{{- end -}}
{{- end -}}
