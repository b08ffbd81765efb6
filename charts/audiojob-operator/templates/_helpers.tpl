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
{{- with .Values.image.digest }}@{{ . }}{{ end }}
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
The database URL the chart's Secret holds. An empty URL or a file: one fails the install: a
file inside the controller pod serves nobody, so using one must be asked for by name.
*/}}
{{- define "audiojob-operator.databaseUrl" -}}
{{- $db := .Values.database }}
{{- if $db.existingSecret }}
{{- else if $db.embeddedFile }}
{{- if and $db.url (not (hasPrefix "file:" $db.url)) }}
{{- fail "database.embeddedFile=true needs database.url to be empty or a file: URL; unset database.embeddedFile to use the database at database.url." }}
{{- end }}
{{- default "file:/tmp/audiojobs.db" $db.url }}
{{- else if not $db.url }}
{{- fail "database.url is required: set database.url=libsql://<db>.turso.io (with database.authToken), or database.existingSecret=<a Secret with keys database-url and auth-token>, or database.embeddedFile=true to try the chart with a SQLite file inside the controller pod." }}
{{- else if hasPrefix "file:" $db.url }}
{{- fail "database.url is a file: URL, which only the controller pod can reach: set database.url to your libSQL server (libsql://<db>.turso.io), or also set database.embeddedFile=true to try the chart with it anyway." }}
{{- else }}
{{- $db.url }}
{{- end }}
{{- end }}

{{/*
Database env vars, from the Secret, and the job table's settings.
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
- name: AUDIOJOB_DB__TABLE
  value: {{ .Values.database.table | quote }}
- name: AUDIOJOB_DB__STATEMENT_TIMEOUT_SECONDS
  value: {{ .Values.database.statementTimeoutSeconds | quote }}
{{- end }}

{{/*
Runner resources per job type, from the Kubernetes-shaped values to the controller's
AUDIOJOB_RUNNER__RESOURCES format. A request left out takes the controller's default; a limit
left out is no limit, as in a container spec.
*/}}
{{- define "audiojob-operator.runnerResources" -}}
{{- $out := dict }}
{{- range $type, $r := .Values.runner.resources }}
{{- $req := $r.requests | default dict }}
{{- $lim := $r.limits | default dict }}
{{- $one := dict "cpu_limit" (get $lim "cpu" | default nil) "memory_limit" (get $lim "memory" | default nil) }}
{{- with get $req "cpu" }}{{ $_ := set $one "cpu_request" (toString .) }}{{ end }}
{{- with get $req "memory" }}{{ $_ := set $one "memory_request" (toString .) }}{{ end }}
{{- with get $lim "cpu" }}{{ $_ := set $one "cpu_limit" (toString .) }}{{ end }}
{{- with get $lim "memory" }}{{ $_ := set $one "memory_limit" (toString .) }}{{ end }}
{{- $_ := set $out $type $one }}
{{- end }}
{{- $out | toJson }}
{{- end }}

{{/*
Egress to the public internet: everything except the ranges the runner's address guard refuses
(runner/rules.py REFUSED_NETWORKS; a test keeps the two lists equal) and the cluster's own
networks. Takes a dict with "root" (the chart context) and "ports" (a list, or empty for all).
*/}}
{{- define "audiojob-operator.publicEgress" -}}
{{- $v4 := list "0.0.0.0/8" "10.0.0.0/8" "100.64.0.0/10" "127.0.0.0/8" "169.254.0.0/16" "172.16.0.0/12" "192.0.0.0/24" "192.0.2.0/24" "192.168.0.0/16" "198.18.0.0/15" "198.51.100.0/24" "203.0.113.0/24" "224.0.0.0/4" "240.0.0.0/4" }}
{{- $v6 := list "::/128" "::1/128" "64:ff9b:1::/48" "100::/64" "2001::/23" "2001:db8::/32" "fc00::/7" "fe80::/10" "fec0::/10" "ff00::/8" }}
{{- range .root.Values.runner.clusterNetworks }}
{{- if contains ":" . }}{{ $v6 = append $v6 . }}{{ else }}{{ $v4 = append $v4 . }}{{ end }}
{{- end -}}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          {{- toYaml $v4 | nindent 10 }}
    - ipBlock:
        cidr: ::/0
        except:
          {{- toYaml $v6 | nindent 10 }}
  {{- with .ports }}
  ports:
    {{- range . }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- end }}
{{- end }}

{{/*
Egress to the cluster DNS.
*/}}
{{- define "audiojob-operator.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/*
Egress to given CIDRs on given TCP ports; with no CIDRs, to any address on those ports.
*/}}
{{- define "audiojob-operator.cidrEgress" -}}
- ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}

{{/*
Egress to the Kubernetes API: its CIDRs when given, else any address on its ports (the API
endpoint is usually not a pod, so no selector can name it).
*/}}
{{- define "audiojob-operator.apiServerEgress" -}}
{{- include "audiojob-operator.cidrEgress" .Values.networkPolicy.apiServer }}
{{- end }}

{{/*
Egress to the database: its CIDRs when given, else any public address on its ports.
*/}}
{{- define "audiojob-operator.databaseEgress" -}}
{{- $db := .Values.networkPolicy.database }}
{{- if $db.cidrs }}
{{- include "audiojob-operator.cidrEgress" $db }}
{{- else }}
{{- include "audiojob-operator.publicEgress" (dict "root" . "ports" $db.ports) }}
{{- end }}
{{- end }}
