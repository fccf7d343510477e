{{/*
Names, labels and the pieces every pod shares (security contexts, volumes, env).
*/}}

{{- define "character.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, at most 40 characters so "<fullname>-introspection" stays a DNS label. */}}
{{- define "character.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "character.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "character.labels" -}}
helm.sh/chart: {{ include "character.chart" . }}
app.kubernetes.io/name: {{ include "character.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: character
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "generation"). */}}
{{- define "character.selectorLabels" -}}
app.kubernetes.io/name: {{ include "character.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference of a flavour; call with (dict "root" $ "flavour" "cpu"). */}}
{{- define "character.image" -}}
{{- $img := index .root.Values.image .flavour -}}
{{- $repo := $img.repository -}}
{{- if .root.Values.image.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .root.Values.image.registry) $img.repository -}}
{{- end -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "character.controllerServiceAccount" -}}
{{- printf "%s-controller" (include "character.fullname" .) -}}
{{- end -}}

{{- define "character.workerServiceAccount" -}}
{{- printf "%s-worker" (include "character.fullname" .) -}}
{{- end -}}

{{/* The Secret holding OCT_S3_ACCESS_KEY and OCT_S3_SECRET_KEY. */}}
{{- define "character.s3SecretName" -}}
{{- if .Values.s3.existingSecret -}}
{{- .Values.s3.existingSecret -}}
{{- else -}}
{{- printf "%s-s3" (include "character.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap of plain settings every pod reads (S3 endpoint, store URI, service addresses). */}}
{{- define "character.configName" -}}
{{- printf "%s-config" (include "character.fullname" .) -}}
{{- end -}}

{{- define "character.executorConfigName" -}}
{{- printf "%s-executor" (include "character.fullname" .) -}}
{{- end -}}

{{- define "character.minioName" -}}
{{- printf "%s-minio" (include "character.fullname" .) -}}
{{- end -}}

{{- define "character.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:9000" (include "character.minioName" .) -}}
{{- else -}}
{{- required "externalS3.endpoint is required when minio.enabled is false" .Values.externalS3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "character.s3Secure" -}}
{{- if .Values.minio.enabled -}}false{{- else -}}{{ .Values.externalS3.secure | toString }}{{- end -}}
{{- end -}}

{{/* Pod-level security context: non-root uid 10001, RuntimeDefault seccomp. */}}
{{- define "character.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context: read-only root, no privilege escalation, no capabilities. */}}
{{- define "character.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Env every oct container gets: caches under OCT_HOME, HOME on the writable /tmp. */}}
{{- define "character.octEnv" -}}
- name: OCT_HOME
  value: /var/lib/oct
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /var/lib/oct/cache
{{- end -}}

{{- define "character.octVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: oct-home
  mountPath: /var/lib/oct
{{- end -}}

{{- define "character.octVolumes" -}}
- name: tmp
  emptyDir: {}
- name: oct-home
{{- if .Values.octHome.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.octHome.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.octHome.sizeLimit | default "20Gi" }}
{{- end }}
{{- end -}}
