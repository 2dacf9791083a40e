{{/* The router's config file: what the chart knows (listen address, discovery, tenants file, ledger),
with router.config merged over it. */}}
{{- define "supernode.router.config" -}}
{{- $r := .Values.router -}}
{{- $base := dict
  "host" "0.0.0.0"
  "port" (int $r.port)
  "logLevel" $r.logLevel
  "discovery" (dict "type" "kubernetes" "namespaces" $r.discovery.namespaces)
  "ledger" (dict "path" $r.ledger.path)
-}}
{{- if include "supernode.router.tenantsSecret" . -}}
{{- $_ := set $base "tenantsFile" (printf "/etc/supernode/tenants/%s" $r.tenants.key) -}}
{{- end -}}
{{- toYaml (mergeOverwrite $base (deepCopy $r.config)) -}}
{{- end -}}
