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
{{- $metering := dict "ledger_path" $r.ledger.path -}}
{{- if eq $r.ledger.type "postgres" -}}
{{- $pg := $r.ledger.postgres -}}
{{- $led := dict "type" "postgres" "schema" $pg.schema "spoolPath" (printf "%s/ledger-spool.sqlite3" (dir $r.ledger.path)) -}}
{{- if and $pg.existingSecret $pg.dsnKey }}{{ $_ := set $led "dsnEnv" "SUPERNODE_POSTGRES_DSN" }}{{ else }}{{ $_ := set $led "dsn" $pg.dsn }}{{ end -}}
{{- if and $pg.existingSecret $pg.passwordKey }}{{ $_ := set $led "passwordEnv" "SUPERNODE_POSTGRES_PASSWORD" }}{{ end -}}
{{- $_ := set $metering "ledger" $led -}}
{{- end -}}
{{- $base := dict
  "server" (dict "host" "0.0.0.0" "port" (int $r.port) "metrics_port" (int $r.metricsPort))
  "discovery" $discovery
  "admission" $admission
  "metering" $metering
-}}
{{- if eq $r.state.type "redis" -}}
{{- $rd := $r.state.redis -}}
{{- $st := dict "type" "redis" "keyPrefix" $rd.keyPrefix "failPolicy" $rd.failPolicy "leaseTtlSeconds" $rd.leaseTtlSeconds -}}
{{- if and $rd.existingSecret $rd.urlKey }}{{ $_ := set $st "urlEnv" "SUPERNODE_REDIS_URL" }}{{ else }}{{ $_ := set $st "url" $rd.url }}{{ end -}}
{{- if and $rd.existingSecret $rd.passwordKey }}{{ $_ := set $st "passwordEnv" "SUPERNODE_REDIS_PASSWORD" }}{{ end -}}
{{- $_ := set $base "state" $st -}}
{{- end -}}
{{- toYaml (mergeOverwrite $base (deepCopy $r.config)) -}}
{{- end -}}

{{/* Checks on router.state / router.ledger the schema cannot word well. Messages never echo a URL. */}}
{{- define "supernode.router.stateChecks" -}}
{{- $r := .Values.router -}}
{{- $several := or $r.autoscaling.enabled (gt (int $r.replicas) 1) -}}
{{- if and $several (or (ne $r.state.type "redis") (ne $r.ledger.type "postgres")) -}}
{{- fail "router.replicas > 1 or router.autoscaling.enabled needs router.state.type=redis and router.ledger.type=postgres: with local state every replica would grant each tenant's limits and quota again, and with a SQLite ledger each replica would bill only its own share" -}}
{{- end -}}
{{- if eq $r.state.type "redis" -}}
{{- $rd := $r.state.redis -}}
{{- if not (or $rd.url (and $rd.existingSecret $rd.urlKey)) -}}
{{- fail "router.state.type=redis needs router.state.redis.url or router.state.redis.existingSecret + urlKey" -}}
{{- end -}}
{{- if regexMatch "://[^/@]*:[^/@]*@" $rd.url -}}
{{- fail "router.state.redis.url must not contain a password: put it in a Secret (router.state.redis.existingSecret + passwordKey or urlKey)" -}}
{{- end -}}
{{- end -}}
{{- if eq $r.ledger.type "postgres" -}}
{{- $pg := $r.ledger.postgres -}}
{{- if not (or $pg.dsn (and $pg.existingSecret $pg.dsnKey)) -}}
{{- fail "router.ledger.type=postgres needs router.ledger.postgres.dsn or router.ledger.postgres.existingSecret + dsnKey" -}}
{{- end -}}
{{- if regexMatch "://[^/@]*:[^/@]*@" $pg.dsn -}}
{{- fail "router.ledger.postgres.dsn must not contain a password: put it in a Secret (router.ledger.postgres.existingSecret + passwordKey or dsnKey)" -}}
{{- end -}}
{{- if $r.ledger.persistence.enabled -}}
{{- fail "router.ledger.persistence is for the sqlite ledger only; with postgres the pods keep just a local spool" -}}
{{- end -}}
{{- end -}}
{{- end -}}
