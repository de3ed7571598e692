{{/*
runwarden.toml, rendered from .Values.config. Keys left null are not written, so the binary's
defaults apply. listen and database are passed in the environment, which beats this file.
*/}}
{{- define "runwarden.toml" -}}
# Rendered by the runwarden Helm chart from .Values.config.
# listen and database come from RUNWARDEN_LISTEN and RUNWARDEN_DATABASE_URL.
no_migrate = {{ not .Values.migrations.onStart }}
{{- $config := .Values.config }}
{{- range $key := list "shutdown_timeout" "queue_capacity" "max_batch" "admission_wait_ms" "pool_size" }}
{{- $value := index $config $key }}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ int64 $value }}
{{- end }}
{{- end }}
{{- with $config.sqlite_synchronous }}
sqlite_synchronous = {{ . | quote }}
{{- end }}
{{- if .Values.auth.metricsOpen }}

[auth]
metrics_open = true
{{- end }}
{{- with $config.scoring }}

[scoring]
{{- $scoring := . }}
{{- range $key := list "partial_credit" "skipped_credit" "memory_limit_mb" "cpu_limit_percent" "freshness_limit_seconds" }}
{{- $value := index $scoring $key }}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ include "runwarden.tomlFloat" $value }}
{{- end }}
{{- end }}
{{- range $key := list "min_history_for_performance" "db_query_limit" }}
{{- $value := index $scoring $key }}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ int64 $value }}
{{- end }}
{{- end }}
{{- with .weights }}

[scoring.weights]
reliability = {{ include "runwarden.tomlFloat" .reliability }}
performance = {{ include "runwarden.tomlFloat" .performance }}
data_quality = {{ include "runwarden.tomlFloat" .data_quality }}
resource_efficiency = {{ include "runwarden.tomlFloat" .resource_efficiency }}
{{- end }}
{{- end }}
{{- end }}
