{{/* The router's config file (supernode.router.config.RouterConfig): what the chart knows (listen
address, kubernetes discovery, tenants file, ledger path), with router.config merged over it. */}}
{{- define "supernode.router.config" -}}
{{- $r := .Values.router -}}
{{- $discovery := dict "type" "kubernetes" "http_port_name" "http" -}}
{{- with $r.discovery.namespace }}{{ $_ := set $discovery "namespace" . }}{{ end -}}
{{- /* admission is always on (bounded queue, capacity-aware admission); auth is off only when
router.tenants.anonymous says so explicitly. */ -}}
{{- $admission := dict -}}
{{- if include "supernode.router.tenantsSecret" . -}}
{{- $_ := set $admission "tenantsFile" (printf "/etc/supernode/tenants/%s" $r.tenants.key) -}}
{{- else if $r.tenants.anonymous -}}
{{- $_ := set $admission "anonymous" true -}}
{{- else -}}
{{- fail "router: no tenants (router.tenants.existingSecret or router.tenants.inline); set router.tenants.anonymous=true to run the router WITHOUT authentication" -}}
{{- end -}}
{{- $base := dict
  "server" (dict "host" "0.0.0.0" "port" (int $r.port) "metrics_port" (int $r.metricsPort))
  "discovery" $discovery
  "admission" $admission
  "metering" (dict "ledger_path" $r.ledger.path)
-}}
{{- toYaml (mergeOverwrite $base (deepCopy $r.config)) -}}
{{- end -}}
