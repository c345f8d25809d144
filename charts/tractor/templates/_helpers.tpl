{{/* Name of every object of the release (one operator per release). */}}
{{- define "tractor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels selecting the operator's pods; fixed for the release's life (a Deployment selector is immutable). */}}
{{- define "tractor.selectorLabels" -}}
app.kubernetes.io/name: tractor-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "tractor.labels" -}}
{{ include "tractor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tractor
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tractor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tractor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tractor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Leader election: always with more than one replica, or when asked for. */}}
{{- define "tractor.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{/* Labels selecting the activator's pods (not the operator's selector: the two Deployments must not overlap). */}}
{{- define "tractor.activatorSelectorLabels" -}}
app.kubernetes.io/name: tractor-activator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every activator object. */}}
{{- define "tractor.activatorLabels" -}}
{{ include "tractor.activatorSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tractor
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
