{{/*
The name of every object: the release name, or "<release>-nodecache" when
the release name does not contain "nodecache". Release "nodecache" gives
the names of deploy/daemonset.yaml.
*/}}
{{- define "nodecache.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels that select the pods: also those of the Services. */}}
{{- define "nodecache.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nodecache.labels" -}}
{{ include "nodecache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "nodecache.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The mirror's address on the node's loopback, where containerd reaches it. */}}
{{- define "nodecache.mirrorPort" -}}5050{{- end -}}

{{/*
The arguments of `nodecache hosts` after "nodecache hosts": the init
container and the postStart hook write the files, the preStop hook
(remove=true) undoes them for the same registries. The hosts directory
is mounted at its path on the node (hostsDir), the one containerd's
config_path names, so that doctor compares config_path with that path.
*/}}
{{- define "nodecache.hostsArgs" -}}
- --dir={{ .root.Values.hostsDir }}
{{- if .remove }}
- --remove
{{- else }}
- --mirror=http://127.0.0.1:{{ include "nodecache.mirrorPort" .root }}
{{- end }}
{{- range .root.Values.registries }}
- --registry={{ . }}
{{- end }}
{{- end -}}

{{/* Where the doctor step and the daemon read containerd's config.toml. */}}
{{- define "nodecache.containerdConfig" -}}/host/etc/containerd/config.toml{{- end -}}

{{/*
The registries `nodecache serve` contacts without --allow-registry: its
DefaultAllowList, as JSON (go test ./deploy/ checks the two agree).
*/}}
{{- define "nodecache.defaultAllowList" -}}
["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "mcr.microsoft.com", "public.ecr.aws"]
{{- end -}}
