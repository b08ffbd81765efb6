{{/*
Expand the name of the chart.
*/}}
{{- define "audiojob-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 chars (DNS label limit).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "audiojob-operator.fullname" -}}
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

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "audiojob-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "audiojob-operator.labels" -}}
helm.sh/chart: {{ include "audiojob-operator.chart" . }}
{{ include "audiojob-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "audiojob-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "audiojob-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Namespace the Jobs and runner pods run in.
*/}}
{{- define "audiojob-operator.jobsNamespace" -}}
{{- default .Release.Namespace .Values.jobsNamespace.name }}
{{- end }}

{{/*
Image reference shared by the controller, queue-metrics and (by default) the runner.
*/}}
{{- define "audiojob-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Controller service account name.
*/}}
{{- define "audiojob-operator.controllerServiceAccount" -}}
{{- printf "%s-controller" (include "audiojob-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Secret holding TURSO_DATABASE_URL and TURSO_AUTH_TOKEN.
*/}}
{{- define "audiojob-operator.secretName" -}}
{{- default (printf "%s-database" (include "audiojob-operator.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{/*
PVC mounted in job pods, if any.
*/}}
{{- define "audiojob-operator.outputClaim" -}}
{{- if .Values.outputVolume.existingClaim }}
{{- .Values.outputVolume.existingClaim }}
{{- else if .Values.outputVolume.create }}
{{- printf "%s-output" (include "audiojob-operator.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Database env vars, from the Secret.
*/}}
{{- define "audiojob-operator.databaseEnv" -}}
- name: TURSO_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "audiojob-operator.secretName" . }}
      key: database-url
- name: TURSO_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "audiojob-operator.secretName" . }}
      key: auth-token
      optional: true
{{- end }}
