{{- define "kiln.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kiln.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kiln.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* hostNetwork: DHCP must see the segment's broadcasts. */}}
{{- define "kiln.hostNetwork" -}}
{{- if or .Values.dhcp.enabled .Values.hostNetwork -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* Ports below 1024 (DHCP 67, TFTP 69) need CAP_NET_BIND_SERVICE. */}}
{{- define "kiln.lowPorts" -}}
{{- if or .Values.dhcp.enabled .Values.tftp.enabled -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
The user: 65532 (the image's kiln user), unless ports below 1024 are served.
Kubernetes gives capabilities.add to a non-root process only through file
capabilities or ambient capabilities, which it does not set (KEP-2763), and file
capabilities are void under allowPrivilegeEscalation: false. So low ports run as
uid 0 with every capability dropped but NET_BIND_SERVICE (and NET_RAW for DHCP),
a read-only root filesystem and no privilege escalation.
*/}}
{{- define "kiln.runAsUser" -}}
{{- if eq (include "kiln.lowPorts" .) "true" -}}0{{- else -}}65532{{- end -}}
{{- end -}}
