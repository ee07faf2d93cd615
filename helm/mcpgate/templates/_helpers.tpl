{{/*
Helpers shared by every template. The helpers that build the gateway container and its
volumes need only `.Values` and `.Release` (and `.Chart` when present), so that they also
work when called from a parent chart with `.Subcharts.mcpgate`; see _sidecar.tpl.
*/}}

{{/* Chart name (nameOverride or "mcpgate"). */}}
{{- define "mcpgate.name" -}}
{{- default "mcpgate" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's resources. */}}
{{- define "mcpgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "mcpgate.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels selecting the release's Pods. */}}
{{- define "mcpgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcpgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "mcpgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mcpgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcpgate
{{- end -}}

{{/* Name of the ServiceAccount the Pods use. */}}
{{- define "mcpgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mcpgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference; the tag defaults to the chart's appVersion. */}}
{{- define "mcpgate.image" -}}
{{- $_ := required "image.repository is required: build the image from the Dockerfile, push it to a registry your cluster pulls from, and set image.repository (e.g. --set image.repository=registry.example.com/platform/mcpgate)" .Values.image.repository -}}
{{- $chart := .Chart | default dict -}}
{{- $tag := .Values.image.tag | default $chart.AppVersion | toString -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (required "image.tag is required (no chart appVersion in this context)" $tag) -}}
{{- end -}}
{{- end -}}

{{/* Directory the configuration volume is mounted at, and the config file inside it.
     They match the Dockerfile's default CMD (run --config /etc/mcpgate/config.yaml). */}}
{{- define "mcpgate.configDir" -}}/etc/mcpgate{{- end -}}
{{- define "mcpgate.configFile" -}}{{ include "mcpgate.configDir" . }}/config.yaml{{- end -}}

{{/* Name of the ConfigMap with the gateway configuration. */}}
{{- define "mcpgate.configMapName" -}}
{{- if .Values.existingConfigMap -}}
{{- .Values.existingConfigMap -}}
{{- else -}}
{{- include "mcpgate.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* Port of a "host:port" listen address ("0.0.0.0:8080", "[::]:8080"). */}}
{{- define "mcpgate.addressPort" -}}
{{- regexReplaceAll "^.*:([0-9]+)$" (toString .) "${1}" -}}
{{- end -}}

{{/* Host of a "host:port" listen address, without brackets. */}}
{{- define "mcpgate.addressHost" -}}
{{- regexReplaceAll "^\\[?(.*?)\\]?:[0-9]+$" (toString .) "${1}" -}}
{{- end -}}

{{/* Fails rendering on values that cannot work. Renders nothing. */}}
{{- define "mcpgate.validate" -}}
{{- if not (has .Values.mode (list "edge" "sidecar")) -}}
{{- fail (printf "mode must be edge or sidecar, not %q" (toString .Values.mode)) -}}
{{- end -}}
{{- if .Values.existingConfigMap -}}
{{- if .Values.config -}}
{{- fail "config and existingConfigMap exclude each other: the gateway reads the ConfigMap existingConfigMap names, so remove config (or existingConfigMap)" -}}
{{- end -}}
{{- else -}}
{{- $cfg := .Values.config | default dict -}}
{{- if not $cfg -}}
{{- fail "config is required: the chart has no default gateway configuration. Give at least config.listen.address, config.listen.public_url, config.admin.address, config.issuers (or config.api_keys) and config.routes (see helm/mcpgate/examples/edge.yaml), or set existingConfigMap" -}}
{{- end -}}
{{- $listen := get $cfg "listen" | default dict -}}
{{- $admin := get $cfg "admin" | default dict -}}
{{- if not (get $listen "address") -}}
{{- fail "config.listen.address is required (e.g. 0.0.0.0:8080, the port of containerPorts.public)" -}}
{{- end -}}
{{- if not (get $listen "public_url") -}}
{{- fail "config.listen.public_url is required: the external URL clients reach the gateway at (e.g. https://mcp.example.com); resource identifiers and metadata URLs are built from it" -}}
{{- end -}}
{{- if not (get $admin "address") -}}
{{- fail "config.admin.address is required (e.g. 0.0.0.0:9090; the probes and metrics use the admin listener)" -}}
{{- end -}}
{{- if not (or (get $cfg "issuers") (get $cfg "api_keys")) -}}
{{- fail "config.issuers is required (the authorization servers whose tokens are accepted), or config.api_keys for API-key-only routes" -}}
{{- end -}}
{{- if not (get $cfg "routes") -}}
{{- fail "config.routes is required: at least one route (name, path_prefix, upstream)" -}}
{{- end -}}
{{- $lport := include "mcpgate.addressPort" (get $listen "address") -}}
{{- $aport := include "mcpgate.addressPort" (get $admin "address") -}}
{{- if ne $lport (toString .Values.containerPorts.public) -}}
{{- fail (printf "config.listen.address %q does not use containerPorts.public (%v)" (get $listen "address") .Values.containerPorts.public) -}}
{{- end -}}
{{- if ne $aport (toString .Values.containerPorts.admin) -}}
{{- fail (printf "config.admin.address %q does not use containerPorts.admin (%v)" (get $admin "address") .Values.containerPorts.admin) -}}
{{- end -}}
{{- $loopback := list "127.0.0.1" "localhost" "::1" -}}
{{- if has (include "mcpgate.addressHost" (get $admin "address")) $loopback -}}
{{- fail (printf "config.admin.address %q is loopback: the kubelet probes the admin port on the Pod IP; use 0.0.0.0" (get $admin "address")) -}}
{{- end -}}
{{- if has (include "mcpgate.addressHost" (get $listen "address")) $loopback -}}
{{- fail (printf "config.listen.address %q is loopback: the Service cannot reach it; use 0.0.0.0" (get $listen "address")) -}}
{{- end -}}
{{- end -}}
{{- if eq (toString .Values.containerPorts.public) (toString .Values.containerPorts.admin) -}}
{{- fail "containerPorts.public and containerPorts.admin must differ" -}}
{{- end -}}
{{- end -}}

{{/* Pod annotations: Prometheus scrape hints (unless a ServiceMonitor is used), the config
     checksum when rollOnConfigChange, and podAnnotations. */}}
{{- define "mcpgate.podAnnotations" -}}
{{- $ann := dict -}}
{{- if and .Values.metrics.podAnnotations (not .Values.metrics.serviceMonitor.enabled) -}}
{{- $_ := set $ann "prometheus.io/scrape" "true" -}}
{{- $_ := set $ann "prometheus.io/port" (toString .Values.containerPorts.admin) -}}
{{- $_ := set $ann "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- if and .Values.rollOnConfigChange (not .Values.existingConfigMap) -}}
{{- $_ := set $ann "checksum/config" (toYaml .Values.config | sha256sum) -}}
{{- end -}}
{{- $ann = merge $ann (.Values.podAnnotations | default dict) -}}
{{- if $ann -}}
{{- toYaml $ann -}}
{{- end -}}
{{- end -}}

{{/* Environment of the gateway container. */}}
{{- define "mcpgate.env" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- with .Values.secrets.introspection }}
{{- if .existingSecret }}
- name: {{ .envName }}
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: MCPGATE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.url }}
- name: MCPGATE_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The gateway container. Used by the edge Deployment and by mcpgate.sidecarContainer. */}}
{{- define "mcpgate.container" -}}
- name: mcpgate
  image: {{ include "mcpgate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - run
    - --config
    - {{ include "mcpgate.configFile" . }}
    - --log-format
    - {{ .Values.logFormat }}
  ports:
    - name: mcpgate-http
      containerPort: {{ .Values.containerPorts.public }}
      protocol: TCP
    - name: mcpgate-admin
      containerPort: {{ .Values.containerPorts.admin }}
      protocol: TCP
  env:
    {{- include "mcpgate.env" . | nindent 4 }}
  startupProbe:
    httpGet:
      path: /healthz
      port: mcpgate-admin
    periodSeconds: {{ .Values.probes.startup.periodSeconds }}
    failureThreshold: {{ .Values.probes.startup.failureThreshold }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: mcpgate-admin
    periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
    timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
    failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: mcpgate-admin
    periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
    timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
    failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: mcpgate-config
      mountPath: {{ include "mcpgate.configDir" . }}
      readOnly: true
    - name: mcpgate-tmp
      mountPath: /tmp
{{- end -}}

{{/* The gateway's volumes: one projected volume holding config.yaml and the files from
     Secrets, mounted as a directory (never with subPath, which would hide the ConfigMap's
     atomic `..data` symlink swap from the gateway's hot reload), and /tmp. */}}
{{- define "mcpgate.volumes" -}}
- name: mcpgate-config
  projected:
    defaultMode: 292 # 0444: world-readable; the sidecar helper cannot rely on a pod fsGroup
    sources:
      - configMap:
          name: {{ include "mcpgate.configMapName" . }}
          items:
            - key: {{ ternary .Values.existingConfigMapKey "config.yaml" (not (empty .Values.existingConfigMap)) }}
              path: config.yaml
      {{- with .Values.secrets.apiKeys.existingSecret }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ $.Values.secrets.apiKeys.key }}
              path: api-keys.yaml
      {{- end }}
      {{- with .Values.secrets.tls.existingSecret }}
      - secret:
          name: {{ . }}
          items:
            - key: tls.crt
              path: tls/tls.crt
            - key: tls.key
              path: tls/tls.key
      {{- end }}
      {{- range .Values.extraConfigFiles }}
      {{- if .secretName }}
      - secret:
          name: {{ .secretName }}
          items:
            - key: {{ .key }}
              path: {{ .path }}
      {{- else }}
      - configMap:
          name: {{ required "extraConfigFiles entries need secretName or configMapName" .configMapName }}
          items:
            - key: {{ .key }}
              path: {{ .path }}
      {{- end }}
      {{- end }}
- name: mcpgate-tmp
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{/* Pod spec fields shared by the Deployments this chart renders (not by the helpers). */}}
{{- define "mcpgate.podCommon" -}}
serviceAccountName: {{ include "mcpgate.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
