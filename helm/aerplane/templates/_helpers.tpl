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

{{/* Labels of a component's pods: the selector labels, part-of and commonLabels, but never the chart or app
version: a chart bump must not restart a Deployment's pods or change a learner Job's (immutable) template. */}}
{{- define "aerplane.podLabels" -}}
{{ include "aerplane.selectorLabels" . }}
app.kubernetes.io/part-of: aerplane
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
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

{{/* AERPLANE_REDIS_URL from redis.existingSecret, or, with the bundled Redis, AERPLANE_REDIS_PASSWORD from the
chart's auth Secret, as container env entries (nothing otherwise). */}}
{{- define "aerplane.redisEnv" -}}
{{- with .Values.redis.existingSecret }}
- name: AERPLANE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.redis.existingSecretKey }}
{{- end }}
{{- if include "aerplane.bundledRedis" . }}
- name: AERPLANE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "aerplane.secretName" . }}
      key: {{ .Values.auth.redisPasswordKey }}
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

{{/* The learner Job's headless Service (its pods' subdomain): DNS names <job>-<index>.<service> for the rendezvous. */}}
{{- define "aerplane.learnerHeadless" -}}
{{- printf "%s-headless" (include "aerplane.componentName" (dict "root" . "component" "learner")) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pod-level settings shared by every aerplane pod. Call with (dict "root" $ "values" .Values.<component>
"component" "<name>"). The affinity is the component's own, plus the learner's anti-affinity and, when the run volume
is ReadWriteOnce, the co-location of the pods that mount it (see aerplane.affinity). */}}
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
{{- with include "aerplane.affinity" . | fromYaml }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .values.schedulerName }}
schedulerName: {{ . }}
{{- end }}
{{- end -}}

{{/* Whether the run volume can be mounted from several nodes at once (ReadWriteMany). */}}
{{- define "aerplane.sharedStorage" -}}
{{- if or (not .Values.storage.enabled) (has "ReadWriteMany" .Values.storage.accessModes) -}}true{{- end -}}
{{- end -}}

{{/* The affinity of a pod (YAML): the component's `affinity` value, plus
- learner pods with learner.podAntiAffinity soft|hard: one pod of the job per node (nodes > 1);
- learner and generation pods on a ReadWriteOnce run volume: all on the node of the first one, since such a volume
  attaches to one node only (the first pod matches its own term, so it may go anywhere). */}}
{{- define "aerplane.affinity" -}}
{{- $aff := deepCopy (default (dict) .values.affinity) -}}
{{- $root := .root -}}
{{- $instance := dict "app.kubernetes.io/name" (include "aerplane.name" $root) "app.kubernetes.io/instance" $root.Release.Name -}}
{{- if and (eq .component "learner") (gt (int .values.nodes) 1) (ne .values.podAntiAffinity "none") -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (merge (dict "app.kubernetes.io/component" "learner") $instance)) -}}
{{- $anti := default (dict) $aff.podAntiAffinity -}}
{{- if eq .values.podAntiAffinity "hard" -}}
{{- $_ := set $anti "requiredDuringSchedulingIgnoredDuringExecution" (append (default (list) $anti.requiredDuringSchedulingIgnoredDuringExecution) $term) -}}
{{- else -}}
{{- $_ := set $anti "preferredDuringSchedulingIgnoredDuringExecution" (append (default (list) $anti.preferredDuringSchedulingIgnoredDuringExecution) (dict "weight" 100 "podAffinityTerm" $term)) -}}
{{- end -}}
{{- $_ := set $aff "podAntiAffinity" $anti -}}
{{- end -}}
{{- if and (has .component (list "learner" "generation")) (not (include "aerplane.sharedStorage" $root)) -}}
{{- $selector := dict "matchLabels" $instance "matchExpressions" (list (dict "key" "app.kubernetes.io/component" "operator" "In" "values" (list "learner" "generation"))) -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" $selector -}}
{{- $pod := default (dict) $aff.podAffinity -}}
{{- $_ := set $pod "requiredDuringSchedulingIgnoredDuringExecution" (append (default (list) $pod.requiredDuringSchedulingIgnoredDuringExecution) $term) -}}
{{- $_ := set $aff "podAffinity" $pod -}}
{{- end -}}
{{- if $aff }}{{ toYaml $aff }}{{ end -}}
{{- end -}}

{{/* A ConfigMap's `data` from the settings the chart derives from its values (`managed`) and the component's `env`
value, one key each (a dict cannot hold a key twice). `env` may add settings, not replace the chart's: a clash fails
with the value to use instead. Call with (dict "managed" $data "extra" $c.env "where" "generation.env"). */}}
{{- define "aerplane.envData" -}}
{{- $data := deepCopy .managed -}}
{{- range $k, $v := .extra -}}
{{- if hasKey $data $k -}}
{{- fail (printf "%s.%s: the chart sets %s from its own values; change that value instead of overriding it in %s" $.where $k $k $.where) -}}
{{- end -}}
{{- $_ := set $data $k $v -}}
{{- end -}}
{{- range $k, $v := $data }}
{{ $k }}: {{ $v | toString | quote }}
{{- end -}}
{{- end -}}

{{/* Where the pods find the initial policy (model.source): a folder on the run volume or on another claim, or the
name of a model embedded in the image. */}}
{{- define "aerplane.modelPath" -}}
{{- $m := .Values.model -}}
{{- if eq $m.source "huggingface" -}}
{{- default (printf "%s/models/%s" .Values.storage.mountPath $m.huggingface.repo) $m.huggingface.dir -}}
{{- else if eq $m.source "pvc" -}}
{{- printf "/models/policy" -}}
{{- else if eq $m.source "embedded" -}}
{{- $m.embedded -}}
{{- else -}}
{{- $m.path -}}
{{- end -}}
{{- end -}}

{{/* The `model` init container of the learner and generation pods: it puts the initial policy in place (or waits
for it) before the service starts. Call with (dict "root" $ "values" .Values.<component>). */}}
{{- define "aerplane.modelInit" -}}
{{- $root := .root -}}
{{- $m := $root.Values.model -}}
{{- $path := include "aerplane.modelPath" $root -}}
- name: model
  image: {{ include "aerplane.image" (dict "root" $root "image" $root.Values.image.gpu) }}
  imagePullPolicy: {{ $root.Values.image.gpu.pullPolicy }}
  {{- if eq $m.source "embedded" }}
  args: ["model", "prepare", {{ $m.embedded | quote }}]
  {{- else }}
  command: ["python", "/opt/aerplane-model/provision.py"]
  {{- if eq $m.source "huggingface" }}
  args: ["huggingface", {{ $m.huggingface.repo | quote }}, {{ $m.huggingface.revision | quote }}, {{ $path | quote }}]
  {{- else }}
  args: ["wait", {{ $path | quote }}]
  {{- end }}
  {{- end }}
  env:
    - name: AERPLANE_CACHE_DIR
      value: /var/cache/aerplane
    - name: HF_HOME
      value: /var/cache/aerplane/huggingface
    {{- if and (eq $m.source "huggingface") $m.huggingface.tokenSecret.name }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $m.huggingface.tokenSecret.name }}
          key: {{ $m.huggingface.tokenSecret.key }}
    {{- end }}
    {{- with $m.init.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $root.Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $m.init.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: runs
      mountPath: {{ $root.Values.storage.mountPath }}
    - name: cache
      mountPath: /var/cache/aerplane
    {{- if ne $m.source "embedded" }}
    - name: model-provision
      mountPath: /opt/aerplane-model
      readOnly: true
    {{- end }}
    {{- if eq $m.source "pvc" }}
    - name: model
      mountPath: /models/policy
      readOnly: true
      {{- with $m.pvc.subPath }}
      subPath: {{ . }}
      {{- end }}
    {{- end }}
{{- end -}}

{{/* The model's volumes: the provisioning script, and the claim of model.source pvc. */}}
{{- define "aerplane.modelVolumes" -}}
{{- $m := .Values.model -}}
{{- if ne $m.source "embedded" }}
- name: model-provision
  configMap:
    name: {{ include "aerplane.componentName" (dict "root" . "component" "model") }}
    defaultMode: 0555
{{- end }}
{{- if eq $m.source "pvc" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ required "model.pvc.claimName: the claim that holds the model (model.source pvc)" $m.pvc.claimName }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* The main container's mount of model.source pvc. */}}
{{- define "aerplane.modelMount" -}}
{{- if eq .Values.model.source "pvc" }}
- name: model
  mountPath: /models/policy
  readOnly: true
  {{- with .Values.model.pvc.subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Pod annotations: checksums of the ConfigMaps' data (a changed setting rolls the pods; their labels, which carry
the chart version, do not), of the token Secret's data (a new token rolls them too), and the component's
podAnnotations. Call with (dict "root" $ "values" $c "configs" (list "configmap-x.yaml") "token" true). */}}
{{- define "aerplane.podAnnotations" -}}
{{- $root := .root -}}
{{- range .configs }}
checksum/{{ trimSuffix ".yaml" . }}: {{ (include (print $root.Template.BasePath "/" .) $root | fromYaml).data | toJson | sha256sum }}
{{- end }}
{{- if .token }}
checksum/auth: {{ (include (print $root.Template.BasePath "/secret.yaml") $root | fromYaml).data | toJson | sha256sum }}
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
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
{{- $key := default $root.Values.auth.existingSecretKey .key -}}
{{- range .names }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ include "aerplane.secretName" $root }}
      key: {{ $key }}
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
