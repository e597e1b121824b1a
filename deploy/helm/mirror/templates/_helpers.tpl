{{/* Names and labels. */}}
{{- define "mirror.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mirror.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "mirror.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "mirror.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mirror.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mirror.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mirror.labels" -}}
{{ include "mirror.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: registry-mirror
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mirror.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "mirror.daemonset" -}}
{{- if not (has .Values.mode (list "DaemonSet" "Deployment")) -}}
{{- fail (printf "mode must be DaemonSet or Deployment, not %q" .Values.mode) -}}
{{- end -}}
{{- if eq .Values.mode "DaemonSet" }}true{{ end -}}
{{- end -}}

{{/* hostPath for a DaemonSet, emptyDir for a Deployment, unless cache.volume says. */}}
{{- define "mirror.cacheVolume" -}}
{{- $volume := .Values.cache.volume | default (ternary "hostPath" "emptyDir" (eq (include "mirror.daemonset" .) "true")) -}}
{{- if not (has $volume (list "hostPath" "emptyDir" "persistentVolumeClaim")) -}}
{{- fail (printf "cache.volume must be hostPath, emptyDir or persistentVolumeClaim, not %q" $volume) -}}
{{- end -}}
{{- $volume -}}
{{- end -}}

{{/* cache.maxBytes (as the mirror reads it: a number, or 500M, 50G, 2TiB in binary units) in MiB. */}}
{{- define "mirror.cacheMiB" -}}
{{- $text := .Values.cache.maxBytes | toString | lower | trimSuffix "ib" | trimSuffix "b" | trim -}}
{{- if not (regexMatch "^[0-9]+[kmgt]?$" $text) -}}
{{- fail (printf "cache.maxBytes: expected a size such as 500M or 50G, not %q" (toString .Values.cache.maxBytes)) -}}
{{- end -}}
{{- $number := regexFind "^[0-9]+" $text | int64 -}}
{{- $unit := trimPrefix (toString $number) $text -}}
{{- $mib := dict "" (div $number 1048576) "k" (div $number 1024) "m" $number "g" (mul $number 1024) "t" (mul $number 1048576) -}}
{{- get $mib $unit -}}
{{- end -}}

{{/* emptyDir sizeLimit and ephemeral-storage request: cache_max_bytes + 10 % + 2 GiB (downloads in
flight, the manifest index of at most 1 GiB, SQLite), so the kubelet never evicts a cache within bounds. */}}
{{- define "mirror.cacheSizeLimit" -}}
{{- $mib := include "mirror.cacheMiB" . | int64 -}}
{{- printf "%dMi" (add $mib (div $mib 10) 2048) -}}
{{- end -}}

{{- define "mirror.scheme" -}}
{{- ternary "https" "http" .Values.tls.enabled -}}
{{- end -}}

{{- define "mirror.tlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "mirror.fullname" .) -}}
{{- else if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else -}}
{{- fail "tls.enabled needs tls.existingSecret or tls.certManager.enabled" -}}
{{- end -}}
{{- end -}}

{{/* One TOML value: strings and arrays as JSON (valid TOML for these), whole numbers without ".0". */}}
{{- define "mirror.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- . -}}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- if eq (float64 .) (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else if kindIs "slice" . -}}
{{- toJson . -}}
{{- else -}}
{{- fail (printf "config: cannot write %v as a TOML value" .) -}}
{{- end -}}
{{- end -}}

{{- define "mirror.configToml" -}}
{{- $managed := list "listen" "cache_dir" "cache_max_bytes" "upstream_username" "upstream_password" "upstream_password_file" "tls_cert" "tls_key" "tls_client_ca" "auth_htpasswd" "auth_tokens" "redis_url" "advertise_url" "peer_secret" "peer_secret_file" "upstreams" -}}
# Rendered by the mirror Helm chart from .Values.config and .Values.upstreams.
cache_max_bytes = {{ .Values.cache.maxBytes | toString | toJson }}
{{- range $key, $value := .Values.config }}
{{- if has $key $managed }}
{{- fail (printf "config.%s is set by the chart (see values.yaml), not in config" $key) }}
{{- end }}
{{ $key }} = {{ include "mirror.tomlValue" $value }}
{{- end }}
{{- range $index, $upstream := .Values.upstreams }}

[[upstreams]]
{{- range $key, $value := $upstream }}
{{- if has $key (list "password" "password_env" "password_file") }}
{{- fail (printf "upstreams[%d].%s: give passwordSecret (an existing Secret), never a password in values" $index $key) }}
{{- else if ne $key "passwordSecret" }}
{{ $key }} = {{ include "mirror.tomlValue" $value }}
{{- end }}
{{- end }}
{{- if $upstream.passwordSecret }}
password_file = "/var/run/secrets/mirror/upstreams/{{ $index }}/password"
{{- end }}
{{- end }}
{{- end -}}
