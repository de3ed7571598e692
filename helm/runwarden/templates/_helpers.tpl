{{/*
Named templates shared by the runwarden chart. Files starting with "_" are not rendered as
manifests.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "runwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else RELEASE when the release name already
contains the chart name, else RELEASE-NAME. Kept to 54 characters so that suffixes such as
"-database" still fit the 63 characters of a label value or DNS label.
*/}}
{{- define "runwarden.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* NAME-VERSION, for the helm.sh/chart label. */}}
{{- define "runwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that identify this release's pods of any component. */}}
{{- define "runwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The labels that select the server pods (Deployment, Service, PodDisruptionBudget,
ServiceMonitor). The component keeps the migration Job's pod out of the Service.
*/}}
{{- define "runwarden.serverSelectorLabels" -}}
{{ include "runwarden.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* The labels every resource carries, without a component. */}}
{{- define "runwarden.commonLabels" -}}
helm.sh/chart: {{ include "runwarden.chart" . }}
{{ include "runwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: runwarden
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels of the server's resources. */}}
{{- define "runwarden.labels" -}}
{{ include "runwarden.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "runwarden.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* "true" in SQLite mode, "" otherwise (templates test it with `if`). */}}
{{- define "runwarden.sqlite" -}}
{{- if eq .Values.database.mode "sqlite" }}true{{ end }}
{{- end }}

{{/* The SQLite database URL: sqlite://MOUNTPATH/FILE?mode=rwc. */}}
{{- define "runwarden.sqliteUrl" -}}
{{- printf "sqlite://%s/%s?mode=rwc" (trimSuffix "/" .Values.database.sqlite.mountPath) .Values.database.sqlite.fileName }}
{{- end }}

{{/* The Secret the PostgreSQL URL is read from: existingSecret, or the chart's own. */}}
{{- define "runwarden.databaseSecretName" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "runwarden.fullname" .)) }}
{{- end }}

{{/* The key of the URL in that Secret. */}}
{{- define "runwarden.databaseSecretKey" -}}
{{- .Values.database.existingSecretKey | default "database-url" }}
{{- end }}

{{/* The claim the SQLite file lives on: existingClaim, or the chart's own. */}}
{{- define "runwarden.claimName" -}}
{{- .Values.database.sqlite.persistence.existingClaim | default (printf "%s-data" (include "runwarden.fullname" .)) }}
{{- end }}

{{/* The Deployment's replica count: at most 1 in SQLite mode (0 scales it down). */}}
{{- define "runwarden.replicas" -}}
{{- if include "runwarden.sqlite" . }}
{{- min (int .Values.replicaCount) 1 }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* The fewest server pods the release runs: the HPA's minimum when it owns the count. */}}
{{- define "runwarden.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- int .Values.autoscaling.minReplicas }}
{{- else }}
{{- include "runwarden.replicas" . }}
{{- end }}
{{- end }}

{{/* config.shutdown_timeout, or the binary's default of 10 s. */}}
{{- define "runwarden.shutdownTimeout" -}}
{{- $t := .Values.config.shutdown_timeout }}
{{- if kindIs "invalid" $t }}10{{ else }}{{ int $t }}{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: as given, or the preStop sleep + shutdown_timeout + 10 s for the
writer's final flush and the database pool to close, so the kubelet never SIGKILLs a pod that
is still draining.
*/}}
{{- define "runwarden.terminationGracePeriodSeconds" -}}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add (include "runwarden.shutdownTimeout" . | int) (int .Values.preStopSleepSeconds) 10 }}
{{- end }}
{{- end }}

{{/* A TOML float: always with a decimal point or an exponent. */}}
{{- define "runwarden.tomlFloat" -}}
{{- $f := float64 . }}
{{- if eq $f (floor $f) }}{{ printf "%.1f" $f }}{{ else }}{{ $f }}{{ end }}
{{- end }}

{{/*
The pod-level settings the server and the migration Job share: pull secrets, service account,
security context, scheduling.
*/}}
{{- define "runwarden.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
enableServiceLinks: false
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Every check on the values that the schema (values.schema.json) cannot express. Included at the
top of the Deployment, so a bad combination fails the whole render with one clear message.
*/}}
{{- define "runwarden.validate" -}}
{{- $db := .Values.database }}
{{- if eq $db.mode "sqlite" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "database.mode=sqlite runs exactly one replica (one process owns the SQLite file), but replicaCount is %d: use database.mode=postgres to run more" (int .Values.replicaCount)) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "database.mode=sqlite runs exactly one replica: autoscaling.enabled needs database.mode=postgres" }}
{{- end }}
{{- if .Values.migrations.job.enabled }}
{{- fail "migrations.job.enabled needs database.mode=postgres: in SQLite mode the server migrates its own file at start (migrations.onStart)" }}
{{- end }}
{{- if or $db.url $db.existingSecret }}
{{- fail "database.url and database.existingSecret are for database.mode=postgres; SQLite mode builds its URL from database.sqlite.mountPath and fileName" }}
{{- end }}
{{- else }}
{{- if and $db.url $db.existingSecret }}
{{- fail "set database.url or database.existingSecret, not both" }}
{{- end }}
{{- if not $db.existingSecret }}
{{- $url := required "database.mode=postgres needs database.url (postgres://USER:PASSWORD@HOST:5432/DB) or database.existingSecret" $db.url }}
{{- if not (regexMatch "^postgres(ql)?://" $url) }}
{{- fail "database.url must start with postgres:// or postgresql://" }}
{{- end }}
{{- end }}
{{- with .Values.config.sqlite_synchronous }}
{{- fail "config.sqlite_synchronous applies to database.mode=sqlite only" }}
{{- end }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- $cpu := .Values.autoscaling.targetCPUUtilizationPercentage }}
{{- $memory := .Values.autoscaling.targetMemoryUtilizationPercentage }}
{{- if and (not $cpu) (not $memory) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- $requests := (.Values.resources | default dict).requests | default dict }}
{{- if and $cpu (not $requests.cpu) }}
{{- fail "autoscaling.targetCPUUtilizationPercentage needs resources.requests.cpu (utilization is measured against the request)" }}
{{- end }}
{{- if and $memory (not $requests.memory) }}
{{- fail "autoscaling.targetMemoryUtilizationPercentage needs resources.requests.memory (utilization is measured against the request)" }}
{{- end }}
{{- end }}
{{- $drain := add (include "runwarden.shutdownTimeout" . | int) (int .Values.preStopSleepSeconds) }}
{{- if le (include "runwarden.terminationGracePeriodSeconds" . | int) $drain }}
{{- fail (printf "terminationGracePeriodSeconds must exceed preStopSleepSeconds + config.shutdown_timeout (%d s), or the kubelet kills pods that are still draining" $drain) }}
{{- end }}
{{- if and (gt (int .Values.preStopSleepSeconds) 0) (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail "preStopSleepSeconds needs Kubernetes 1.30 or later (the preStop sleep action)" }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if has .name (list "RUNWARDEN_LISTEN" "RUNWARDEN_DATABASE_URL" "RUNWARDEN_CONFIG" "RUNWARDEN_LOG_FORMAT" "RUST_LOG") }}
{{- fail (printf "extraEnv: %s is set by the chart (containerPort, database.*, config, log.*)" .name) }}
{{- end }}
{{- end }}
{{- with .Values.config.scoring }}
{{- with .weights }}
{{- $sum := addf .reliability .performance .data_quality .resource_efficiency }}
{{- if or (lt $sum 0.999999999) (gt $sum 1.000000001) }}
{{- fail (printf "config.scoring.weights must sum to 1, they sum to %v" $sum) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
