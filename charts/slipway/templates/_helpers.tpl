{{/* The release's full name, within the 63 characters a name allows. */}}
{{- define "slipway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "slipway.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "slipway.labels" -}}
{{ include "slipway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slipway
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "slipway.serviceAccountName" -}}
{{- default (include "slipway.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "slipway.image" -}}
{{- $image := index . 0 -}}
{{- $chart := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The watched namespaces as a JSON list ("[]" means every namespace). Each entry is rendered as a template (the
default is the release namespace, and so is null); "all", or an empty list, means every namespace.
*/}}
{{- define "slipway.watchNamespaces" -}}
{{- $watch := .Values.watchNamespaces -}}
{{- if kindIs "invalid" $watch -}}
{{- $watch = list .Release.Namespace -}}
{{- else if kindIs "string" $watch -}}
{{- $watch = list $watch -}}
{{- end -}}
{{- $names := list -}}
{{- range $watch -}}
{{- $name := tpl (toString .) $ | trim -}}
{{- if eq $name "all" -}}
{{- $names = list "all" -}}
{{- else if and $name (not (has "all" $names)) -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- if or (has "all" $names) (not $names) -}}
[]
{{- else -}}
{{- $names | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{- define "slipway.clusterWide" -}}
{{- if eq (include "slipway.watchNamespaces" .) "[]" -}}true{{- end -}}
{{- end -}}
