{{/* vim: set filetype=mustache: */}}

{{/*
Chart name, truncated to 63 characters (DNS label).
*/}}
{{- define "prefstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name (the `helm create` logic), truncated to 63 characters.
If the release name contains the chart name it is used as is.
*/}}
{{- define "prefstream.fullname" -}}
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

{{/*
Name of one component's objects: "<fullname>-<component>", the fullname shortened so that the
whole stays a 63-character DNS label (Service names must be).
Usage: include "prefstream.componentName" (dict "context" $ "component" "worker")
*/}}
{{- define "prefstream.componentName" -}}
{{- $max := sub 62 (len .component) | int -}}
{{- printf "%s-%s" (include "prefstream.fullname" .context | trunc $max | trimSuffix "-") .component -}}
{{- end -}}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "prefstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Standard labels (app.kubernetes.io/*) for every object.
Usage: include "prefstream.labels" (dict "context" $ "component" "worker")
*/}}
{{- define "prefstream.labels" -}}
helm.sh/chart: {{ include "prefstream.chart" .context }}
{{ include "prefstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: prefstream
{{- with .context.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels: name, instance and (for workloads) component. Never chart or version here:
selectors are immutable.
*/}}
{{- define "prefstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prefstream.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/*
ServiceAccount used by the worker and API pods.
*/}}
{{- define "prefstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "prefstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The streamer image reference: registry/repository:tag or @digest; the tag defaults to appVersion.
*/}}
{{- define "prefstream.image" -}}
{{- $img := .Values.image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry -}}
{{- $repo = printf "%s/%s" $img.registry $img.repository -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $img.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/*
vLLM in-cluster endpoint for the worker's pool client: dns+http:// resolves every ready pod of
the headless Service and spreads calls over them.
*/}}
{{- define "prefstream.vllmEndpoint" -}}
{{- printf "dns+http://%s.%s.svc:%d/v1" (include "prefstream.componentName" (dict "context" . "component" "vllm")) .Release.Namespace (int .Values.vllm.port) -}}
{{- end -}}

{{/*
The model endpoint list (STREAMER_MODEL__BASE_URLS).
*/}}
{{- define "prefstream.modelEndpoints" -}}
{{- if .Values.vllm.enabled -}}
{{- list (include "prefstream.vllmEndpoint" .) | toJson -}}
{{- else -}}
{{- .Values.model.endpoints | toJson -}}
{{- end -}}
{{- end -}}

{{/*
Render one settings value as an env string: strings as they are, everything else as JSON (lists
are JSON for pydantic-settings; JSON also keeps large integers out of Go's 1e+06 float format).
*/}}
{{- define "prefstream.envValue" -}}
{{- if kindIs "string" . -}}
{{- . -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/*
The STREAMER_* data of the ConfigMap, from .Values.config: `config.<field>` becomes
STREAMER_<FIELD> and `config.<section>.<field>` becomes STREAMER_<SECTION>__<FIELD> (camelCase ->
SNAKE_CASE). Null and empty-string values are left out, so the application default applies.
Secrets are never rendered here (see the Secret and existingSecret).
*/}}
{{- define "prefstream.configData" -}}
{{- $data := dict -}}
{{- range $key, $value := .Values.config -}}
{{- if kindIs "map" $value -}}
{{- range $field, $v := $value -}}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v ""))) -}}
{{- $name := printf "STREAMER_%s__%s" (snakecase $key | upper) (snakecase $field | upper) -}}
{{- $_ := set $data $name (include "prefstream.envValue" $v) -}}
{{- end -}}
{{- end -}}
{{- else if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) -}}
{{- $_ := set $data (printf "STREAMER_%s" (snakecase $key | upper)) (include "prefstream.envValue" $value) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $data "STREAMER_MODEL__BASE_URLS" (include "prefstream.modelEndpoints" .) -}}
{{- toYaml $data -}}
{{- end -}}

{{/*
Name of the Secret holding STREAMER_MODEL__API_KEY / STREAMER_CASSANDRA__PASSWORD /
STREAMER_API__TOKEN: the existingSecret, or the chart-managed one.
*/}}
{{- define "prefstream.secretName" -}}
{{- default (include "prefstream.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/*
True ("true") when the chart renders its own Secret: no existingSecret and some value given.
*/}}
{{- define "prefstream.createSecret" -}}
{{- if and (not .Values.existingSecret) (include "prefstream.anySecretValue" .) -}}
true
{{- end -}}
{{- end -}}

{{/*
True ("true") when some secrets.* value is given.
*/}}
{{- define "prefstream.anySecretValue" -}}
{{- range $k, $v := .Values.secrets -}}
{{- if $v -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A credentials Secret of its own (cassandraCredentialsSecret, kafkaCredentialsSecret): the user
name (when usernameKey is set) and the password. Usage:
include "prefstream.credentialsSecretEnv" (dict "secret" .Values.kafkaCredentialsSecret "prefix" "STREAMER_KAFKA__SASL_")
*/}}
{{- define "prefstream.credentialsSecretEnv" -}}
{{- if .secret.usernameKey }}
- name: {{ .prefix }}USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .secret.name }}
      key: {{ .secret.usernameKey }}
{{- end }}
- name: {{ .prefix }}PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secret.name }}
      key: {{ .secret.passwordKey }}
{{- end -}}

{{/*
TLS material mounted from Secrets (tls.kafka, tls.cassandra): the STREAMER_*__SSL_*FILE paths,
the volumes and their read-only mounts at /etc/prefstream/tls/<kafka|cassandra>.
*/}}
{{- define "prefstream.tlsEnv" -}}
{{- range $name := list "kafka" "cassandra" -}}
{{- $t := index $.Values.tls $name -}}
{{- if $t.secretName -}}
{{- $prefix := printf "STREAMER_%s__SSL_" (upper $name) -}}
{{- if $t.caKey }}
- name: {{ $prefix }}CAFILE
  value: /etc/prefstream/tls/{{ $name }}/{{ $t.caKey }}
{{- end }}
{{- if $t.certKey }}
- name: {{ $prefix }}CERTFILE
  value: /etc/prefstream/tls/{{ $name }}/{{ $t.certKey }}
- name: {{ $prefix }}KEYFILE
  value: /etc/prefstream/tls/{{ $name }}/{{ $t.keyKey }}
{{- end }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "prefstream.tlsVolumes" -}}
{{- range $name := list "kafka" "cassandra" -}}
{{- $t := index $.Values.tls $name -}}
{{- if $t.secretName }}
- name: tls-{{ $name }}
  secret:
    secretName: {{ $t.secretName }}
    defaultMode: 0440
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "prefstream.tlsMounts" -}}
{{- range $name := list "kafka" "cassandra" -}}
{{- if (index $.Values.tls $name).secretName }}
- name: tls-{{ $name }}
  mountPath: /etc/prefstream/tls/{{ $name }}
  readOnly: true
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
One secret env entry, or nothing. Usage:
include "prefstream.secretEnvEntry" (dict "context" $ "env" "STREAMER_MODEL__API_KEY" "existingKey" "..." "value" .Values.secrets.modelApiKey)
*/}}
{{- define "prefstream.secretEnvEntry" -}}
{{- $ctx := .context -}}
{{- if $ctx.Values.existingSecret -}}
{{- if .existingKey }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.existingSecret }}
      key: {{ .existingKey }}
{{- end -}}
{{- else if .value }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ default (include "prefstream.fullname" $ctx) .chartSecret }}
      key: {{ .env }}
{{- end -}}
{{- end -}}

{{/*
Secret env of one component. Usage:
include "prefstream.secretEnv" (dict "context" $ "component" "worker"|"api"|"migrate" ["chartSecret" NAME])
chartSecret names the chart-managed Secret to read (the hook Jobs read a hook-scoped copy, since
the release's own Secret does not exist yet at pre-install).
The worker needs the model API key and the Kafka and Cassandra credentials, the API the Kafka
and Cassandra credentials and its bearer tokens, `streamer topics ensure` the Kafka credentials,
`streamer migrate` the Cassandra credentials.
*/}}
{{- define "prefstream.secretEnv" -}}
{{- $ctx := .context -}}
{{- $v := $ctx.Values -}}
{{- $keys := $v.existingSecretKeys -}}
{{- if eq .component "worker" -}}
{{- include "prefstream.secretEnvEntry" (dict "context" $ctx "env" "STREAMER_MODEL__API_KEY" "existingKey" $keys.modelApiKey "value" $v.secrets.modelApiKey "chartSecret" .chartSecret) -}}
{{- end -}}
{{- if has .component (list "worker" "api" "topics") -}}
{{- if $v.kafkaCredentialsSecret.name -}}
{{- include "prefstream.credentialsSecretEnv" (dict "secret" $v.kafkaCredentialsSecret "prefix" "STREAMER_KAFKA__SASL_") -}}
{{- else -}}
{{- include "prefstream.secretEnvEntry" (dict "context" $ctx "env" "STREAMER_KAFKA__SASL_PASSWORD" "existingKey" $keys.kafkaSaslPassword "value" $v.secrets.kafkaSaslPassword "chartSecret" .chartSecret) -}}
{{- end -}}
{{- include "prefstream.secretEnvEntry" (dict "context" $ctx "env" "STREAMER_KAFKA__SSL_KEY_PASSWORD" "existingKey" $keys.kafkaSslKeyPassword "value" $v.secrets.kafkaSslKeyPassword "chartSecret" .chartSecret) -}}
{{- end -}}
{{- if has .component (list "worker" "api" "migrate") -}}
{{- if $v.cassandraCredentialsSecret.name -}}
{{- include "prefstream.credentialsSecretEnv" (dict "secret" $v.cassandraCredentialsSecret "prefix" "STREAMER_CASSANDRA__") -}}
{{- else -}}
{{- include "prefstream.secretEnvEntry" (dict "context" $ctx "env" "STREAMER_CASSANDRA__PASSWORD" "existingKey" $keys.cassandraPassword "value" $v.secrets.cassandraPassword "chartSecret" .chartSecret) -}}
{{- end -}}
{{- include "prefstream.secretEnvEntry" (dict "context" $ctx "env" "STREAMER_CASSANDRA__SSL_KEY_PASSWORD" "existingKey" $keys.cassandraSslKeyPassword "value" $v.secrets.cassandraSslKeyPassword "chartSecret" .chartSecret) -}}
{{- end -}}
{{- if eq .component "api" -}}
{{- include "prefstream.secretEnvEntry" (dict "context" $ctx "env" "STREAMER_API__TOKEN" "existingKey" $keys.apiToken "value" $v.secrets.apiToken "chartSecret" .chartSecret) -}}
{{- include "prefstream.secretEnvEntry" (dict "context" $ctx "env" "STREAMER_API__READ_TOKENS" "existingKey" $keys.apiReadTokens "value" $v.secrets.apiReadTokens "chartSecret" .chartSecret) -}}
{{- end -}}
{{- end -}}

{{/*
Pod-level security context of the streamer pods (worker, API, hook Jobs).
*/}}
{{- define "prefstream.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{/*
Writable scratch volumes of the streamer pods (the root filesystem is read-only):
/tmp, and the working directory where faust keeps its data directory (<app id>-data).
*/}}
{{- define "prefstream.scratchVolumes" -}}
- name: tmp
  emptyDir:
    {{- with .Values.scratch.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- else }}
    {}
    {{- end }}
- name: data
  emptyDir:
    {{- with .Values.scratch.dataSizeLimit }}
    sizeLimit: {{ . }}
    {{- else }}
    {}
    {{- end }}
{{- end -}}

{{- define "prefstream.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.scratch.workingDir }}
{{- end -}}

{{/*
An HTTP probe with bitnami's enabled/timing fields; a custom probe replaces it whole.
Usage: include "prefstream.probe" (dict "probe" .Values.worker.livenessProbe "custom" .Values.worker.customLivenessProbe "path" "/livez" "port" "http")
*/}}
{{- define "prefstream.probe" -}}
{{- if .custom -}}
{{- toYaml .custom -}}
{{- else -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{- toYaml (omit .probe "enabled") | nindent 0 }}
{{- end -}}
{{- end -}}

{{/*
Validate value combinations that the JSON schema cannot express clearly; every problem is
reported at once (bitnami's validateValues aggregation).
*/}}
{{- define "prefstream.validateValues" -}}
{{- $errors := list -}}
{{- $w := .Values.worker -}}
{{- if and $w.autoscaling.enabled $w.keda.enabled -}}
{{- $errors = append $errors "worker.autoscaling.enabled and worker.keda.enabled are both true: enable one autoscaler only (KEDA creates and owns its own HPA for the worker Deployment)." -}}
{{- end -}}
{{- if not .Values.config.kafka.bootstrapServers -}}
{{- $errors = append $errors "config.kafka.bootstrapServers is required (e.g. my-kafka-bootstrap.kafka.svc:9092)." -}}
{{- end -}}
{{- if not .Values.config.cassandra.hosts -}}
{{- $errors = append $errors "config.cassandra.hosts is required (e.g. [\"my-dc1-service.cassandra.svc\"])." -}}
{{- end -}}
{{- if and (not .Values.vllm.enabled) (ne (toString .Values.config.model.engine) "baseline") (not .Values.model.endpoints) -}}
{{- $errors = append $errors "model.endpoints is empty and vllm.enabled is false: list the OpenAI-compatible endpoints (e.g. [\"http://vllm.llm.svc:8000/v1\"]) or set vllm.enabled=true." -}}
{{- end -}}
{{- if and .Values.vllm.enabled .Values.model.endpoints -}}
{{- $errors = append $errors "vllm.enabled is true and model.endpoints is set: the worker uses the in-cluster vLLM pool; leave model.endpoints empty." -}}
{{- end -}}
{{- if and .Values.vllm.enabled (ne (int .Values.config.model.contextTokens) (int .Values.vllm.maxModelLen)) -}}
{{- $errors = append $errors (printf "config.model.contextTokens (%v) must equal vllm.maxModelLen (%v): the worker fits prompt + max_tokens into the served context." .Values.config.model.contextTokens .Values.vllm.maxModelLen) -}}
{{- end -}}
{{- if .Values.vllm.reasoningParser -}}
{{- range .Values.vllm.extraArgs -}}
{{- if hasPrefix "--reasoning-parser" (toString .) -}}
{{- $errors = append $errors "vllm.reasoningParser is set and vllm.extraArgs has --reasoning-parser too: set the parser in vllm.reasoningParser only." -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.existingSecret (include "prefstream.anySecretValue" .) -}}
{{- $errors = append $errors "existingSecret is set and so are secrets.*: use one or the other (the chart-managed Secret is rendered only without existingSecret)." -}}
{{- end -}}
{{- if and .Values.cassandraCredentialsSecret.name (not .Values.cassandraCredentialsSecret.passwordKey) -}}
{{- $errors = append $errors "cassandraCredentialsSecret.passwordKey is required when cassandraCredentialsSecret.name is set." -}}
{{- end -}}
{{- if and .Values.kafkaCredentialsSecret.name (not .Values.kafkaCredentialsSecret.passwordKey) -}}
{{- $errors = append $errors "kafkaCredentialsSecret.passwordKey is required when kafkaCredentialsSecret.name is set." -}}
{{- end -}}
{{- $k := .Values.config.kafka -}}
{{- $protocol := default "PLAINTEXT" $k.securityProtocol -}}
{{- if hasPrefix "SASL_" $protocol -}}
{{- if not (or $k.saslUsername .Values.kafkaCredentialsSecret.usernameKey) -}}
{{- $errors = append $errors (printf "config.kafka.securityProtocol is %s: set config.kafka.saslUsername (or kafkaCredentialsSecret.name + usernameKey)." $protocol) -}}
{{- end -}}
{{- if not (or .Values.kafkaCredentialsSecret.name .Values.secrets.kafkaSaslPassword (and .Values.existingSecret .Values.existingSecretKeys.kafkaSaslPassword)) -}}
{{- $errors = append $errors (printf "config.kafka.securityProtocol is %s: give the SASL password through kafkaCredentialsSecret, existingSecret + existingSecretKeys.kafkaSaslPassword, or secrets.kafkaSaslPassword." $protocol) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tls.kafka.secretName (not (hasSuffix "SSL" $protocol)) -}}
{{- $errors = append $errors (printf "tls.kafka.secretName is set but config.kafka.securityProtocol is %s: use SSL or SASL_SSL." $protocol) -}}
{{- end -}}
{{- if and .Values.tls.cassandra.secretName (not .Values.config.cassandra.sslEnabled) -}}
{{- $errors = append $errors "tls.cassandra.secretName is set but config.cassandra.sslEnabled is not true." -}}
{{- end -}}
{{- range $name := list "kafka" "cassandra" -}}
{{- $t := index $.Values.tls $name -}}
{{- if ne (empty $t.certKey) (empty $t.keyKey) -}}
{{- $errors = append $errors (printf "tls.%s: a client certificate needs both certKey and keyKey." $name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.vllm.enabled (eq .Values.vllm.modelCache.type "pvc") .Values.vllm.modelCache.pvc.existingClaim (gt (int .Values.vllm.replicaCount) 1) (has "ReadWriteOnce" .Values.vllm.modelCache.pvc.accessModes) -}}
{{- $errors = append $errors "vllm.replicaCount > 1 with one ReadWriteOnce model-cache claim: use a ReadWriteMany claim or vllm.modelCache.type=emptyDir." -}}
{{- end -}}
{{- if and .Values.vllm.enabled (eq .Values.vllm.modelCache.type "pvc") (not .Values.vllm.modelCache.pvc.existingClaim) (gt (int .Values.vllm.replicaCount) 1) (has "ReadWriteOnce" .Values.vllm.modelCache.pvc.accessModes) -}}
{{- $errors = append $errors "vllm.replicaCount > 1 with a chart-created ReadWriteOnce model-cache claim: set vllm.modelCache.pvc.accessModes=[ReadWriteMany] or vllm.modelCache.type=emptyDir." -}}
{{- end -}}
{{- if not (kindIs "invalid" .Values.config.shutdownTimeoutS) -}}
{{- if le (float64 $w.terminationGracePeriodSeconds) (float64 .Values.config.shutdownTimeoutS) -}}
{{- $errors = append $errors (printf "worker.terminationGracePeriodSeconds (%v) must exceed config.shutdownTimeoutS (%v), or Kubernetes kills the worker before in-flight updates finish." $w.terminationGracePeriodSeconds .Values.config.shutdownTimeoutS) -}}
{{- end -}}
{{- end -}}
{{- if $errors -}}
{{- printf "\n\nVALUES VALIDATION:\n  - %s\n" (join "\n  - " $errors) | fail -}}
{{- end -}}
{{- end -}}

{{/*
The fields every alert of templates/prometheusrule.yaml shares: `for`, the severity and extra
labels, and the runbook link (docs/runbook.md, one section per alert, anchored by its lower-case
name). The caller appends `summary` and `description` under `annotations`. Usage:
include "prefstream.alertMeta" (dict "root" $ "name" "PrefstreamX" "alert" .Values.metrics.prometheusRule.x)
*/}}
{{- define "prefstream.alertMeta" -}}
{{- $pr := .root.Values.metrics.prometheusRule -}}
for: {{ .alert.for }}
labels:
  severity: {{ .alert.severity }}
  {{- with $pr.alertLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  runbook_url: {{ printf "%s#%s" $pr.runbookUrl (lower .name) }}
{{- end -}}

{{/*
The ConfigMap holding the worker's mapping file: mapping.existingConfigMap, else the chart's own
(from mapping.inline); empty when no mapping is configured.
*/}}
{{- define "prefstream.mappingConfigMap" -}}
{{- if .Values.mapping.existingConfigMap -}}
{{- .Values.mapping.existingConfigMap -}}
{{- else if .Values.mapping.inline -}}
{{- include "prefstream.componentName" (dict "context" . "component" "mapping") -}}
{{- end -}}
{{- end -}}
