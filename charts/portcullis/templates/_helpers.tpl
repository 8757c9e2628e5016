{{/*
Names. The namespaced objects keep the names the operator looks for (Services portcullis-webhook
and portcullis-tokens, ServiceAccount portcullis-operator, its Secrets and Lease), so they are
fixed; the cluster-wide RBAC objects take the release's name, which is "portcullis" for the
usual `helm install portcullis`, so two releases never fight over a ClusterRole.
*/}}
{{- define "portcullis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels config/ gives every object, and Helm's standard ones. */}}
{{- define "portcullis.labels" -}}
app.kubernetes.io/name: portcullis
app.kubernetes.io/component: {{ .component }}
{{- with .root }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}
{{- end -}}

{{/* The operator's pods: what the Deployment, its Services, the PDB and the NetworkPolicies select. */}}
{{- define "portcullis.selector" -}}
app.kubernetes.io/name: portcullis
app.kubernetes.io/component: operator
{{- end -}}

{{- define "portcullis.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* cert-manager mode: where the Certificates' Secrets are mounted. */}}
{{- define "portcullis.webhookCertDir" -}}/etc/portcullis/webhook-tls{{- end -}}
{{- define "portcullis.tokensCertDir" -}}/etc/portcullis/tokens-tls{{- end -}}
