{{/* The objects' name: the release's when it names ddprofiler, else release-ddprofiler. */}}
{{- define "ddprofiler.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ddprofiler.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
{{- if ne (include "ddprofiler.fullname" .) .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end -}}
