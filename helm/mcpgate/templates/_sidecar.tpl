{{/*
Sidecar helpers: add mcpgate next to an existing MCP server container.

mode: sidecar renders such a Pod itself (templates/deployment.yaml, from sidecar.mcpServer).
When another chart owns the Pod, make mcpgate a dependency of that chart and configure it
under its key, with sidecar.workload.enabled: false so that it renders only its ConfigMap:

  # Chart.yaml of the parent chart
  dependencies:
    - name: mcpgate
      version: 0.2.0
      repository: file://../mcpgate        # or wherever the chart is published

  # values.yaml of the parent chart
  mcpgate:
    mode: sidecar
    image:
      repository: <your registry>/mcpgate   # required: the image built from the Dockerfile
    sidecar:
      workload:
        enabled: false
    config:
      listen: {address: 0.0.0.0:8080, public_url: https://mcp.example.com}
      admin: {address: 0.0.0.0:9090}
      issuers: [{name: corp, issuer: https://auth.example.com}]
      routes:
        - {name: mcp, path_prefix: /mcp, upstream: "http://127.0.0.1:3000", scopes: [mcp:use]}

  # the parent's Pod template: pass the subchart's scope, `.Subcharts.mcpgate`
  spec:
    containers:
      - name: my-mcp-server
        image: ...
        # listen on 127.0.0.1:3000 so that only the gateway reaches it
      {{- include "mcpgate.sidecarContainer" .Subcharts.mcpgate | nindent 6 }}
    volumes:
      {{- include "mcpgate.sidecarVolumes" .Subcharts.mcpgate | nindent 6 }}

Point the parent's Service at the container port named "mcpgate-http" (the gateway's public
port), never at the MCP server's port. The helpers only need `.Values` and `.Release` of the
mcpgate scope, so `(dict "Values" .Values.mcpgate "Release" .Release)` also works (then
set mcpgate.image.tag too, since there is no chart appVersion to default to).
*/}}

{{/* mcpgate.sidecarContainer: a one-element YAML list holding the mcpgate container
     (ports mcpgate-http and mcpgate-admin, probes on the admin port, locked-down
     securityContext, config mounted from the mcpgate-config volume). */}}
{{- define "mcpgate.sidecarContainer" -}}
{{- include "mcpgate.validate" . -}}
{{- include "mcpgate.container" . -}}
{{- end -}}

{{/* mcpgate.sidecarVolumes: the volumes mcpgate.sidecarContainer mounts (mcpgate-config,
     mcpgate-tmp), as a YAML list to append to the Pod's volumes. */}}
{{- define "mcpgate.sidecarVolumes" -}}
{{- include "mcpgate.volumes" . -}}
{{- end -}}

{{/* "true" when this chart renders the Pod-owning workload itself. */}}
{{- define "mcpgate.renderWorkload" -}}
{{- if or (eq .Values.mode "edge") .Values.sidecar.workload.enabled -}}true{{- end -}}
{{- end -}}
