{{- define "thinktune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "thinktune.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "thinktune.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "thinktune.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "thinktune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "thinktune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: thinktune
{{- end -}}

{{- define "thinktune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thinktune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "thinktune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "thinktune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "thinktune.watchNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- join "," .Values.watch.namespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Rules for the namespaced objects the operator reads and writes (least privilege). */}}
{{- define "thinktune.namespacedRules" -}}
- apiGroups: ["thinktune.io"]
  resources: ["datasetbuilds", "finetunejobs", "modelexports"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["thinktune.io"]
  resources: ["finetunejobs"]
  verbs: ["delete"]          # ttlSecondsAfterFinished
- apiGroups: ["thinktune.io"]
  resources: ["datasetbuilds/status", "finetunejobs/status", "modelexports/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  # delete: the previous attempt's ConfigMap, and what a refused gang creation had created (all or nothing)
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["scheduling.x-k8s.io", "scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["get", "create"]
{{- end -}}
