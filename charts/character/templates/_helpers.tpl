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

{{/*
Components with their own S3 identity (one MinIO user or one external Secret each) that this
install runs: the controller, the stage Jobs (kubernetes executor) or the deployed workers, and
the persona server (serving.enabled).
*/}}
{{- define "character.s3Components" -}}
{{- if eq .Values.controller.executor "kubernetes" -}}
controller stages
{{- else -}}
{{- include "character.deployedServices" . | trim -}}
{{- end -}}
{{- if .Values.serving.enabled }} serving{{ end -}}
{{- end -}}

{{/*
The Secret holding OCT_S3_ACCESS_KEY and OCT_S3_SECRET_KEY of one component; call with
(dict "root" $ "component" "controller"). With the chart's MinIO: its per-component user
`<fullname>-s3-<component>`; else s3.componentSecrets, s3.existingSecret or `<fullname>-s3`.
*/}}
{{- define "character.s3SecretFor" -}}
{{- $v := .root.Values -}}
{{- if $v.minio.enabled -}}
{{- printf "%s-s3-%s" (include "character.fullname" .root) .component -}}
{{- else if index (default dict $v.s3.componentSecrets) .component -}}
{{- index $v.s3.componentSecrets .component -}}
{{- else if $v.s3.existingSecret -}}
{{- $v.s3.existingSecret -}}
{{- else -}}
{{- printf "%s-s3" (include "character.fullname" .root) -}}
{{- end -}}
{{- end -}}

{{- define "character.minioRootSecretName" -}}
{{- default (printf "%s-minio-root" (include "character.fullname" .)) .Values.minio.existingRootSecret -}}
{{- end -}}

{{/* The services the chart deploys: the controller, and the workers with the services executor. */}}
{{- define "character.deployedServices" -}}
{{- range $name, $svc := .Values.services -}}
{{- if and $svc.enabled (or (eq $name "controller") (eq $.Values.controller.executor "services")) }}{{ $name }} {{ end -}}
{{- end -}}
{{- end -}}

{{/* The TLS Secret of one service; call with (dict "root" $ "component" "generation"). */}}
{{- define "character.tlsSecretFor" -}}
{{- default (printf "%s-%s-tls" (include "character.fullname" .root) .component) .root.Values.tls.existingSecret -}}
{{- end -}}

{{/* DNS names a service's certificate covers; call with (dict "root" $ "component" "generation"). */}}
{{- define "character.serviceDnsNames" -}}
{{- $svc := printf "%s-%s" (include "character.fullname" .root) .component -}}
{{- $ns := .root.Release.Namespace -}}
- {{ $svc }}
- {{ $svc }}.{{ $ns }}
- {{ $svc }}.{{ $ns }}.svc
- {{ $svc }}.{{ $ns }}.svc.cluster.local
{{- if has .component (list "controller" "serving") }}
{{- /* for `kubectl port-forward` from a workstation */}}
- localhost
{{- end }}
{{- end -}}

{{- define "character.platformConfigName" -}}
{{- printf "%s-platform" (include "character.fullname" .) -}}
{{- end -}}

{{- define "character.s3CaSecret" -}}
{{- if .Values.minio.enabled -}}
{{- if .Values.minio.tls -}}{{ include "character.tlsSecretFor" (dict "root" . "component" "minio") }}{{- end -}}
{{- else -}}
{{- .Values.externalS3.caSecret -}}
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
{{- if .Values.minio.enabled -}}{{ .Values.minio.tls | toString }}{{- else -}}{{ .Values.externalS3.secure | toString }}{{- end -}}
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

{{/*
Env every oct container gets: caches under OCT_HOME, HOME on the writable /tmp, no hub
downloads, the S3 CA when there is one, then the operator's `env`.
*/}}
{{- define "character.octEnv" -}}
{{- $env := merge (dict) (default dict .Values.env) (include "character.octEnvDefaults" . | fromYaml) -}}
{{- $list := list -}}
{{- range $name := keys $env | sortAlpha -}}
{{- $list = append $list (dict "name" $name "value" (index $env $name | toString)) -}}
{{- end -}}
{{- toYaml $list -}}
{{- end -}}

{{/* The defaults under .Values.env, as a map (the stage Jobs get the same through executor.yaml). */}}
{{- define "character.octEnvDefaults" -}}
OCT_HOME: /var/lib/oct
HOME: /tmp
XDG_CACHE_HOME: /var/lib/oct/cache
HF_HUB_OFFLINE: "1"
{{- if include "character.s3CaSecret" . }}
OCT_S3_CA_FILE: /etc/oct/s3-ca/ca.crt
{{- end }}
{{- end -}}

{{- define "character.octVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: oct-home
  mountPath: /var/lib/oct
{{- if include "character.s3CaSecret" . }}
- name: s3-ca
  mountPath: /etc/oct/s3-ca
  readOnly: true
{{- end }}
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
{{- with include "character.s3CaSecret" . }}
- name: s3-ca
  secret:
    secretName: {{ . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{/*
A Secret whose values, when generated (call with "generated" true), are kept from the
cluster on upgrade; call with (dict "root" $ "name" N "component" C "data" {KEY: value}).
*/}}
{{- define "character.keptSecret" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- $data := dict -}}
{{- $generated := default false .generated -}}
{{- range $key, $value := .data -}}
{{- $old := "" -}}
{{- if and $existing $existing.data (hasKey $existing.data $key) -}}
{{- $old = index $existing.data $key | b64dec -}}
{{- end -}}
{{- /* generated values keep what the cluster has; given ones win */ -}}
{{- $_ := set $data $key (ternary (default $value $old) (default $old $value) $generated) -}}
{{- end -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "character.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  {{- range $key := keys $data | sortAlpha }}
  {{ $key }}: {{ index $data $key | b64enc | quote }}
  {{- end }}
{{- end -}}

{{/* "true" when an IPv4 CIDR contains the cloud metadata address 169.254.169.254. */}}
{{- define "character.containsMetadata" -}}
{{- $parts := splitList "/" . -}}
{{- if and (not (contains ":" .)) (eq (len $parts) 2) -}}
{{- $o := splitList "." (first $parts) -}}
{{- $ip := add (mul (atoi (index $o 0)) 16777216) (mul (atoi (index $o 1)) 65536) (mul (atoi (index $o 2)) 256) (atoi (index $o 3)) -}}
{{- $meta := add (mul 169 16777216) (mul 254 65536) (mul 169 256) 254 -}}
{{- $size := 1 -}}
{{- range until (sub 32 (atoi (last $parts)) | int) }}{{ $size = mul $size 2 }}{{ end -}}
{{- if eq (div $ip $size) (div $meta $size) }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy peers, refusing any ipBlock that would let the metadata address through; call with (dict "peers" L "where" "networkPolicy.dns"). */}}
{{- define "character.peers" -}}
{{- range $i, $peer := .peers -}}
{{- with $peer.ipBlock -}}
{{- if and (include "character.containsMetadata" .cidr) (not (has "169.254.169.254/32" (default list .except))) -}}
{{- fail (printf "%s[%d]: ipBlock %s contains the cloud metadata address; add 169.254.169.254/32 to its except list" $.where $i .cidr) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml .peers -}}
{{- end -}}

{{- define "character.clientServiceAccount" -}}
{{- printf "%s-client" (include "character.fullname" .) -}}
{{- end -}}

{{- define "character.authSecretName" -}}
{{- default (printf "%s-auth" (include "character.fullname" .)) .Values.controller.auth.tokensSecret -}}
{{- end -}}

{{- define "character.servingServiceAccount" -}}
{{- printf "%s-serving" (include "character.fullname" .) -}}
{{- end -}}
