{{/* Names and labels shared by every template. */}}

{{- define "aerplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aerplane.fullname" -}}
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

{{/* "<fullname>-<component>", e.g. aerplane-coefficient. Call with (dict "root" $ "component" "coefficient"). */}}
{{- define "aerplane.componentName" -}}
{{- printf "%s-%s" (include "aerplane.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aerplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aerplane.labels" -}}
helm.sh/chart: {{ include "aerplane.chart" . }}
app.kubernetes.io/name: {{ include "aerplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aerplane
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component's objects. Call with (dict "root" $ "component" "coefficient"). */}}
{{- define "aerplane.componentLabels" -}}
{{ include "aerplane.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aerplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aerplane.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aerplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aerplane.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference "repository:tag" (tag defaults to the chart's appVersion). Call with (dict "root" $ "image" .Values.image.slim). */}}
{{- define "aerplane.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Whether the chart runs its own Redis. */}}
{{- define "aerplane.bundledRedis" -}}
{{- if and .Values.redis.bundled.enabled (not .Values.redis.url) (not .Values.redis.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* AERPLANE_REDIS_URL as a ConfigMap entry, unless it comes from redis.existingSecret (see aerplane.redisEnv). */}}
{{- define "aerplane.redisConfig" -}}
{{- if not .Values.redis.existingSecret -}}
AERPLANE_REDIS_URL: {{ include "aerplane.redisUrl" . | quote }}
{{- end -}}
{{- end -}}

{{/* AERPLANE_REDIS_URL from redis.existingSecret, as a container env entry (nothing otherwise). */}}
{{- define "aerplane.redisEnv" -}}
{{- with .Values.redis.existingSecret }}
- name: AERPLANE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.redis.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* The Redis URL every service uses: the external one, or the bundled StatefulSet's Service. */}}
{{- define "aerplane.redisUrl" -}}
{{- if .Values.redis.url -}}
{{- .Values.redis.url -}}
{{- else if .Values.redis.bundled.enabled -}}
{{- printf "redis://%s:%d/0" (include "aerplane.componentName" (dict "root" . "component" "redis")) (int .Values.redis.bundled.port) -}}
{{- else -}}
{{- fail "redis: set redis.url to an external Redis (>= 6.2) or enable redis.bundled" -}}
{{- end -}}
{{- end -}}

{{- define "aerplane.secretName" -}}
{{- default (printf "%s-auth" (include "aerplane.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "aerplane.claimName" -}}
{{- default (printf "%s-runs" (include "aerplane.fullname" .)) .Values.storage.existingClaim -}}
{{- end -}}

{{/* The learner's headless Service: stable DNS names <pod>.<service> for torchrun's c10d rendezvous. */}}
{{- define "aerplane.learnerHeadless" -}}
{{- printf "%s-headless" (include "aerplane.componentName" (dict "root" . "component" "learner")) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pod-level settings shared by every aerplane pod. Call with (dict "root" $ "values" .Values.<component>). */}}
{{- define "aerplane.podCommon" -}}
serviceAccountName: {{ include "aerplane.serviceAccountName" .root }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* startup/liveness/readiness probes on /healthz and /readyz of the named port. Call with (dict "probes" .Values.<c>.probes "port" "http"). */}}
{{- define "aerplane.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ .probes.startup.periodSeconds }}
  failureThreshold: {{ .probes.startup.failureThreshold }}
  timeoutSeconds: 5
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ .probes.liveness.periodSeconds }}
  failureThreshold: {{ .probes.liveness.failureThreshold }}
  timeoutSeconds: 5
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  periodSeconds: {{ .probes.readiness.periodSeconds }}
  failureThreshold: {{ .probes.readiness.failureThreshold }}
  timeoutSeconds: 5
{{- end -}}

{{/* The API token as AERPLANE_API_TOKEN (and extra env names), from the chart's Secret or an existing one. */}}
{{- define "aerplane.tokenEnv" -}}
{{- $root := .root -}}
{{- range .names }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ include "aerplane.secretName" $root }}
      key: {{ $root.Values.auth.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* Container resources with the GPU limit set. Call with (dict "resources" .Values.x.resources "gpus" N). */}}
{{- define "aerplane.gpuResources" -}}
{{- $res := deepCopy (default (dict) .resources) -}}
{{- $limits := default (dict) $res.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int .gpus) -}}
{{- $_ := set $res "limits" $limits -}}
{{- toYaml $res -}}
{{- end -}}

{{/* The shared run volume (PVC, or an emptyDir when storage is disabled). */}}
{{- define "aerplane.runsVolume" -}}
- name: runs
{{- if .Values.storage.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "aerplane.claimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}
