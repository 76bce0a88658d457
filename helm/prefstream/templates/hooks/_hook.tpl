{{/*
Annotations of the objects that the pre-install/pre-upgrade Jobs use. They are hooks themselves,
created before the Jobs (lower weight), because the release's own ConfigMap, Secret and
ServiceAccount do not exist yet at pre-install time.
*/}}
{{- define "prefstream.hookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}

{{/*
Whether any hook Job is rendered.
*/}}
{{- define "prefstream.hooksEnabled" -}}
{{- if or .Values.hooks.migrate.enabled .Values.hooks.topics.enabled -}}
true
{{- end -}}
{{- end -}}

{{/*
One hook Job running `streamer <args>`. Usage:
include "prefstream.hookJob" (dict "context" $ "component" "migrate" "args" (list "migrate"))
*/}}
{{- define "prefstream.hookJob" -}}
{{- $ctx := .context -}}
{{- $h := $ctx.Values.hooks -}}
{{- $hookName := include "prefstream.componentName" (dict "context" $ctx "component" "hooks") -}}
{{- $secretEnv := include "prefstream.secretEnv" (dict "context" $ctx "component" .component "chartSecret" $hookName) | trim -}}
{{- $tlsEnv := include "prefstream.tlsEnv" $ctx | trim -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "prefstream.componentName" (dict "context" $ctx "component" .component) }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "prefstream.labels" (dict "context" $ctx "component" .component) | nindent 4 }}
  annotations:
    {{- include "prefstream.hookAnnotations" (dict "weight" 0) | nindent 4 }}
spec:
  backoffLimit: {{ $h.backoffLimit }}
  activeDeadlineSeconds: {{ $h.activeDeadlineSeconds }}
  template:
    metadata:
      labels:
        {{- include "prefstream.labels" (dict "context" $ctx "component" .component) | nindent 8 }}
    spec:
      restartPolicy: Never
      {{- with $h.serviceAccountName }}
      serviceAccountName: {{ . }}
      {{- end }}
      automountServiceAccountToken: false
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "prefstream.podSecurityContext" $ctx | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "prefstream.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args: {{ toJson .args }}
          workingDir: {{ $ctx.Values.scratch.workingDir }}
          envFrom:
            - configMapRef:
                name: {{ $hookName }}
          {{- if or $secretEnv $tlsEnv }}
          env:
            {{- with $secretEnv }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $tlsEnv }}
            {{- . | nindent 12 }}
            {{- end }}
          {{- end }}
          {{- with $h.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml $ctx.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            {{- include "prefstream.scratchMounts" $ctx | nindent 12 }}
            {{- include "prefstream.tlsMounts" $ctx | nindent 12 }}
      volumes:
        {{- include "prefstream.scratchVolumes" $ctx | nindent 8 }}
        {{- include "prefstream.tlsVolumes" $ctx | nindent 8 }}
      {{- with $h.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $h.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
