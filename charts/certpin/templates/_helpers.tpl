{{/* The chart's name, or nameOverride. */}}
{{- define "certpin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Objects' base name: fullnameOverride, or the release name with the chart's name (once). */}}
{{- define "certpin.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "certpin.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Where certpin's namespaced objects go: namespaceOverride (an umbrella
chart installing certpin elsewhere), or the release's namespace. */}}
{{- define "certpin.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "certpin.labels" -}}
app.kubernetes.io/name: {{ include "certpin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* registry/repository:tag, or @digest; global.imageRegistry (a mirror) wins. */}}
{{- define "certpin.image" -}}
{{- $registry := .Values.image.registry -}}
{{- with .Values.global }}{{- with .imageRegistry }}{{- $registry = . -}}{{- end }}{{- end -}}
{{- $name := .Values.image.repository -}}
{{- if $registry }}{{- $name = printf "%s/%s" $registry .Values.image.repository -}}{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $name .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $name (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "certpin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "certpin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "certpin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "certpin.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* What certpin does in a watched namespace (least privilege). */}}
{{- define "certpin.rules" -}}
- apiGroups: [certpin.dev]
  resources: [clientcertificatesets]
  verbs: [get, list, watch, patch, update]
- apiGroups: [certpin.dev]
  resources: [clientcertificatesets/status]
  verbs: [get, patch, update]
- apiGroups: [certpin.dev]
  resources: [clientcertificatesets/finalizers]
  verbs: [update]
# Secrets: watched as metadata, read when a set names them; the rendered
# Secret is created and applied.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# ConfigMaps: watched as metadata (CA bundles a set names), read when a
# set names them; the rendered ConfigMap is created and applied.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [deployments/scale, statefulsets/scale]
  verbs: [get, patch]
# StopStart waits for pods to stop; Manual tells which pods run old settings.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
