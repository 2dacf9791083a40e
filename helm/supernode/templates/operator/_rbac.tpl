{{/*
The operator's permissions, in one place. They mirror supernode.operator.kube.REQUIRED_PERMISSIONS
(what the client wrapper calls) plus what kopf itself needs (CRD discovery, Events);
tests/helm/test_helm_rbac.py fails when the two drift apart in either direction.
*/}}

{{/* Rules on namespaced resources: in the ClusterRole (all namespaces) or a Role per watched namespace. */}}
{{- define "supernode.operator.namespacedRules" -}}
- apiGroups: [supernode.io]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch, update]
- apiGroups: [supernode.io]
  resources: [modeldeployments/status]
  verbs: [get, patch, update]
- apiGroups: [supernode.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch, delete]
# ConfigMaps: the Ascend device plugin's kube-system/mindx-dl-deviceinfo-<node> (device health, read) and
# one rank-table ConfigMap per Ascend replica group (ranktable.py), owned by the group's workload.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
# One Secret per replica group (store secret + engine token), write-only: the operator reads no Secret.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Rules on cluster-scoped resources: always in the ClusterRole. */}}
{{- define "supernode.operator.clusterRules" -}}
- apiGroups: [""]
  resources: [nodes, namespaces]
  verbs: [get, list, watch]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- end -}}

{{/* The Ascend device plugin's reports (kube-system/mindx-dl-deviceinfo-<node>): one namespaced watch. */}}
{{- define "supernode.operator.deviceInfoRules" -}}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch]
{{- end -}}

{{/* The router replicas' Service and pods (router_poll.py lists both), in the release namespace. */}}
{{- define "supernode.operator.routerRules" -}}
- apiGroups: [""]
  resources: [services, pods]
  verbs: [list]
{{- end -}}

{{/* The leader-election Lease: only in the release namespace (a Role there), whatever is watched. */}}
{{- define "supernode.operator.leaderElectionRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end -}}
