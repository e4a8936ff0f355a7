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

{{/* The key of the database Secret that holds the URL. */}}
{{- define "taskmesh.databaseSecretKey" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecretKey -}}
{{- else -}}
DATABASE_URL
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the Kafka SASL password (an existing Secret, e.g. a Strimzi
KafkaUser's, or the chart's own for kafka.sasl.password); empty name: no SASL password. */}}
{{- define "taskmesh.kafkaSaslSecret" -}}
{{- if .Values.kafka.sasl.passwordSecret -}}
{{- .Values.kafka.sasl.passwordSecret -}}
{{- else if .Values.kafka.sasl.password -}}
{{- printf "%s-secrets" (include "taskmesh.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "taskmesh.kafkaSaslKey" -}}
{{- if .Values.kafka.sasl.passwordSecret -}}
{{- .Values.kafka.sasl.passwordKey -}}
{{- else -}}
kafka-sasl-password
{{- end -}}
{{- end -}}

{{/* TASKMESH_KAFKA_PROPERTIES: kafka.properties (sorted by key) plus the file locations of
the mounted TLS Secrets. Never a secret: the binary refuses password/secret keys here. */}}
{{- define "taskmesh.kafkaProperties" -}}
{{- $tls := .Values.kafka.tls -}}
{{- $properties := list -}}
{{- range $key, $value := .Values.kafka.properties -}}
{{- if and $tls.caSecret (eq $key "ssl.ca.location") -}}
{{- fail "kafka.properties[\"ssl.ca.location\"] and kafka.tls.caSecret are both set: keep one (the chart sets ssl.ca.location to the mounted caSecret)" -}}
{{- end -}}
{{- if and $tls.clientSecret (has $key (list "ssl.certificate.location" "ssl.key.location")) -}}
{{- fail (printf "kafka.properties[%q] and kafka.tls.clientSecret are both set: keep one (the chart sets it to the mounted clientSecret)" $key) -}}
{{- end -}}
{{- /* Whole numbers come from YAML as float64: print 1000000, not 1e+06. */ -}}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) -}}
{{- $value = int64 $value -}}
{{- end -}}
{{- $properties = append $properties (printf "%s=%v" $key $value) -}}
{{- end -}}
{{- if $tls.caSecret -}}
{{- $properties = append $properties (printf "ssl.ca.location=/etc/taskmesh/kafka-ca/%s" $tls.caKey) -}}
{{- end -}}
{{- if $tls.clientSecret -}}
{{- $properties = append $properties (printf "ssl.certificate.location=/etc/taskmesh/kafka-client/%s" $tls.certKey) -}}
{{- $properties = append $properties (printf "ssl.key.location=/etc/taskmesh/kafka-client/%s" $tls.keyKey) -}}
{{- end -}}
{{- join "," $properties -}}
{{- end -}}

{{/* Environment every taskmesh container gets (configuration and secrets, then the global
extraEnv; the rest comes from the ConfigMap through envFrom). Secrets are files in read-only Secret volumes where the
binary takes a _FILE variable. */}}
{{- define "taskmesh.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "taskmesh.databaseSecret" . }}
      key: {{ include "taskmesh.databaseSecretKey" . }}
{{- if .Values.database.tls.caSecret }}
# libpq's variables; sslmode/sslrootcert parameters in DATABASE_URL win over them.
- name: PGSSLMODE
  value: {{ .Values.database.tls.sslmode | quote }}
- name: PGSSLROOTCERT
  value: /etc/taskmesh/db-ca/{{ .Values.database.tls.caKey }}
{{- end }}
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
{{- if include "taskmesh.kafkaSaslSecret" . }}
- name: TASKMESH_KAFKA_SASL_PASSWORD_FILE
  value: /etc/taskmesh/kafka-sasl/{{ include "taskmesh.kafkaSaslKey" . }}
{{- end }}
{{- if and .Values.kafka.tls.clientSecret .Values.kafka.tls.keyPasswordKey }}
- name: TASKMESH_KAFKA_SSL_KEY_PASSWORD_FILE
  value: /etc/taskmesh/kafka-client/{{ .Values.kafka.tls.keyPasswordKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Read-only mounts of the Secret volumes below, in every taskmesh container. */}}
{{- define "taskmesh.volumeMounts" -}}
{{- if .Values.jwt.publicKeys }}
- name: jwt
  mountPath: /etc/taskmesh/jwt
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/taskmesh/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- name: kafka-client
  mountPath: /etc/taskmesh/kafka-client
  readOnly: true
{{- end }}
{{- if include "taskmesh.kafkaSaslSecret" . }}
- name: kafka-sasl
  mountPath: /etc/taskmesh/kafka-sasl
  readOnly: true
{{- end }}
{{- if .Values.database.tls.caSecret }}
- name: db-ca
  mountPath: /etc/taskmesh/db-ca
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod's Secret volumes. Each projects only the keys taskmesh reads, so a CA Secret
that also holds the CA's private key (CloudNativePG's <cluster>-ca) does not put it in the
pod; files are 0440 (readable by the pod's fsGroup). */}}
{{- define "taskmesh.volumes" -}}
{{- if .Values.jwt.publicKeys }}
- name: jwt
  secret:
    secretName: {{ include "taskmesh.jwtSecret" . }}
    defaultMode: 0440
    items:
      - key: public-keys
        path: public-keys
{{- end }}
{{- with .Values.kafka.tls }}
{{- if .caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .caSecret }}
    defaultMode: 0440
    items:
      - key: {{ .caKey }}
        path: {{ .caKey }}
{{- end }}
{{- if .clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ .clientSecret }}
    defaultMode: 0440
    items:
      - key: {{ .certKey }}
        path: {{ .certKey }}
      - key: {{ .keyKey }}
        path: {{ .keyKey }}
      {{- if .keyPasswordKey }}
      - key: {{ .keyPasswordKey }}
        path: {{ .keyPasswordKey }}
      {{- end }}
{{- end }}
{{- end }}
{{- if include "taskmesh.kafkaSaslSecret" . }}
- name: kafka-sasl
  secret:
    secretName: {{ include "taskmesh.kafkaSaslSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ include "taskmesh.kafkaSaslKey" . }}
        path: {{ include "taskmesh.kafkaSaslKey" . }}
{{- end }}
{{- with .Values.database.tls }}
{{- if .caSecret }}
- name: db-ca
  secret:
    secretName: {{ .caSecret }}
    defaultMode: 0440
    items:
      - key: {{ .caKey }}
        path: {{ .caKey }}
{{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}
