{{/*
The chart name, cut to 63 characters (the limit of a DNS label and of a label value).
*/}}
{{- define "modelplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources, cut to 63 characters. A release already named after the
chart is not repeated ("modelplane", not "modelplane-modelplane").
*/}}
{{- define "modelplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "modelplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: the Deployment's selector and the Service's selector. They can never change after
install (a Deployment's selector is immutable), so they hold only the name and the instance.
*/}}
{{- define "modelplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels for every resource: the selector labels plus what may change between versions.
*/}}
{{- define "modelplane.labels" -}}
helm.sh/chart: {{ include "modelplane.chart" . }}
{{ include "modelplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: modelplane
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "modelplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; the tag defaults to the chart's appVersion and a
digest, when given, pins the image.
*/}}
{{- define "modelplane.imageRef" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- $ref := printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- if $image.digest }}
{{- $ref = printf "%s@%s" $ref $image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{- define "modelplane.image" -}}
{{- include "modelplane.imageRef" (list .Values.image .) }}
{{- end }}

{{- define "modelplane.runtimeImage" -}}
{{- include "modelplane.imageRef" (list .Values.runtime.image .) }}
{{- end }}

{{/*
Peering: more than one operator pod needs Kopf peering so only one of them serves at a time.
*/}}
{{- define "modelplane.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{- define "modelplane.peeringName" -}}
{{- default (include "modelplane.fullname" .) .Values.operator.peeringName }}
{{- end }}

{{/*
The operator's RBAC rules, from files/operator-rules.yaml: the one source, maintained with the
operator's code. Split by scope, because a namespaced install grants namespaced resources in a Role
per watched namespace and cluster-scoped resources (CRDs) in a ClusterRole.
*/}}
{{- define "modelplane.clusterScopedResources" -}}
{{- list "customresourcedefinitions" "namespaces" "nodes" "clusterkopfpeerings" "persistentvolumes" "storageclasses" "priorityclasses" "runtimeclasses" | toJson }}
{{- end }}

{{- define "modelplane.rules" -}}
{{- $rules := .Files.Get "files/operator-rules.yaml" | fromYamlArray }}
{{- if not $rules }}
{{- fail "files/operator-rules.yaml is missing or empty: the chart cannot grant the operator's rules" }}
{{- end }}
{{- $rules | toJson }}
{{- end }}

{{/*
{"cluster": [...], "namespaced": [...]}: the rules split by the scope of their resources. A rule
mixing both scopes fails the render, because a Role would silently drop half of it.
*/}}
{{- define "modelplane.rulesByScope" -}}
{{- $clusterScoped := include "modelplane.clusterScopedResources" . | fromJsonArray }}
{{- $cluster := list }}
{{- $namespaced := list }}
{{- range include "modelplane.rules" . | fromJsonArray }}
{{- $scopes := dict }}
{{- range .resources }}
{{- $_ := set $scopes (ternary "cluster" "namespaced" (has (first (splitList "/" .)) $clusterScoped)) true }}
{{- end }}
{{- if gt (len $scopes) 1 }}
{{- fail (printf "files/operator-rules.yaml: the rule for %v mixes cluster-scoped and namespaced resources; split it" .resources) }}
{{- end }}
{{- if hasKey $scopes "cluster" }}{{ $cluster = append $cluster . }}{{ else }}{{ $namespaced = append $namespaced . }}{{ end }}
{{- end }}
{{- dict "cluster" $cluster "namespaced" $namespaced | toJson }}
{{- end }}
