{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "hepbatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release already has it. */}}
{{- define "hepbatch.fullname" -}}
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

{{- define "hepbatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "hepbatch.labels" -}}
helm.sh/chart: {{ include "hepbatch.chart" . }}
app.kubernetes.io/name: {{ include "hepbatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hepbatch
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component (pass a dict: root, component). */}}
{{- define "hepbatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hepbatch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's objects (pass a dict: root, component). */}}
{{- define "hepbatch.componentLabels" -}}
{{ include "hepbatch.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "hepbatch.operator.fullname" -}}
{{- printf "%s-operator" (include "hepbatch.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hepbatch.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "hepbatch.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hepbatch.csi.fullname" -}}
{{- printf "%s-csi-node" (include "hepbatch.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Namespace of the CSI node plugin: csi.namespace, else the release namespace. */}}
{{- define "hepbatch.csi.namespace" -}}
{{- default .Release.Namespace .Values.csi.namespace }}
{{- end }}

{{- define "hepbatch.provisioner.fullname" -}}
{{- printf "%s-csi-provisioner" (include "hepbatch.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* An image reference (pass a dict: image, root). */}}
{{- define "hepbatch.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The CSI driver name: fixed by the API (crds/src: CSI_DRIVER_NAME). */}}
{{- define "hepbatch.csiDriverName" -}}
cvmfs.hepbatch.io
{{- end }}

{{/* The operator's configuration file (operator/src/config.rs), from values. */}}
{{- define "hepbatch.operator.config" -}}
{{- $c := .Values.operator.config }}
{{- $cvmfs := dict "provider" $c.cvmfs.provider }}
{{- if eq $c.cvmfs.provider "pvc" }}
{{- $_ := set $cvmfs "claimName" $c.cvmfs.claimName }}
{{- else if and (eq $c.cvmfs.provider "hostPath") $c.cvmfs.path }}
{{- $_ := set $cvmfs "path" $c.cvmfs.path }}
{{- end }}
{{- $out := dict "platforms" $c.platforms "cvmfs" $cvmfs "security" $c.security }}
{{- if $c.gpu.nvidiaRuntimeClassName }}
{{- $_ := set $out "gpu" (dict "nvidiaRuntimeClassName" $c.gpu.nvidiaRuntimeClassName) }}
{{- end }}
{{- toYaml $out }}
{{- end }}
