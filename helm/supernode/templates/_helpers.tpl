{{/* Chart name, truncated to a DNS label. */}}
{{- define "supernode.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: <release>-<chart> unless the release already contains the chart name. */}}
{{- define "supernode.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "supernode.operator.fullname" -}}
{{- printf "%s-operator" (include "supernode.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "supernode.router.fullname" -}}
{{- printf "%s-router" (include "supernode.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "supernode.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object (without instance: selector labels carry it). */}}
{{- define "supernode.commonLabels" -}}
helm.sh/chart: {{ include "supernode.chart" . }}
app.kubernetes.io/part-of: supernode
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "supernode.labels" -}}
{{ include "supernode.commonLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component (operator | router); call with (dict "ctx" $ "component" "router"). */}}
{{- define "supernode.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "supernode-%s" .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "supernode.componentLabels" -}}
{{ include "supernode.commonLabels" .ctx }}
{{ include "supernode.selectorLabels" . }}
{{- end -}}

{{/* The control-plane image reference: digest wins over tag; tag defaults to appVersion. */}}
{{- define "supernode.image" -}}
{{- include "supernode.checkPinned" . -}}
{{- $img := .Values.image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry }}{{- $repo = printf "%s/%s" $img.registry $img.repository -}}{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "supernode.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "supernode.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "supernode.router.serviceAccountName" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- default (include "supernode.router.fullname" .) .Values.router.serviceAccount.name -}}
{{- else -}}
{{- required "router.serviceAccount.name is required when router.serviceAccount.create is false" .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the router's tenants file ("" when none). */}}
{{- define "supernode.router.tenantsSecret" -}}
{{- if .Values.router.tenants.existingSecret -}}
{{- .Values.router.tenants.existingSecret -}}
{{- else if .Values.router.tenants.inline -}}
{{- printf "%s-tenants" (include "supernode.router.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context shared by operator and router (restricted Pod Security Standard). */}}
{{- define "supernode.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context shared by operator and router. */}}
{{- define "supernode.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Refuse floating image tags with a message naming the value (JSON schema cannot say it clearly). */}}
{{- define "supernode.checkPinned" -}}
{{- if or (eq .Values.image.tag "latest") (and (not .Values.image.digest) (not .Values.image.tag) (eq .Chart.AppVersion "latest")) -}}
{{- fail "image.tag must pin a version (or set image.digest), not \"latest\"" -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the router->engine token and the operator's group key (engine-auth.yaml). */}}
{{- define "supernode.engineAuthSecret" -}}
{{- .Values.engineAuth.existingSecret | default (printf "%s-engine-auth" (include "supernode.fullname" .)) -}}
{{- end -}}

{{/* Namespaces whose engine pods get the engines NetworkPolicy. */}}
{{- define "supernode.engineNamespaces" -}}
{{- $ns := .Values.networkPolicy.engines.namespaces | default .Values.operator.watchNamespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $ns) -}}
{{- end -}}
