{{/* The chart's name, at most 63 characters. */}}
{{- define "taskmesh.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: <release> when it contains the chart name, else <release>-<chart>. */}}
{{- define "taskmesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "taskmesh.labels" -}}
app.kubernetes.io/name: {{ include "taskmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" $name). */}}
{{- define "taskmesh.selector" -}}
app.kubernetes.io/name: {{ include "taskmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image reference. */}}
{{- define "taskmesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The service account's name. */}}
{{- define "taskmesh.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "taskmesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the database URL. */}}
{{- define "taskmesh.databaseSecret" -}}
{{- default (printf "%s-secrets" (include "taskmesh.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{/* The Secret holding the JWT keys. */}}
{{- define "taskmesh.jwtSecret" -}}
{{- default (printf "%s-secrets" (include "taskmesh.fullname" .)) .Values.jwt.existingSecret -}}
{{- end -}}

{{/* Pod security: non-root, read-only root filesystem, no privileges. */}}
{{- define "taskmesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "taskmesh.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Environment every taskmesh container gets (configuration and secrets). */}}
{{- define "taskmesh.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "taskmesh.databaseSecret" . }}
      key: DATABASE_URL
{{- if not .Values.jwt.publicKeys }}
- name: TASKMESH_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "taskmesh.jwtSecret" . }}
      key: TASKMESH_JWT_SECRET
{{- end }}
{{- if .Values.jwt.publicKeys }}
- name: TASKMESH_JWT_PUBLIC_KEYS
  value: /etc/taskmesh/jwt/public-keys
{{- end }}
- name: TASKMESH_KAFKA_PROPERTIES
  valueFrom:
    secretKeyRef:
      name: {{ include "taskmesh.fullname" . }}-secrets
      key: TASKMESH_KAFKA_PROPERTIES
      optional: true
{{- end -}}
