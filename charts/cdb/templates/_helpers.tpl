{{/*
Names. Workloads carry the seed's names (one word finds a service everywhere), so one
release per namespace; names are still truncated to 63 characters as DNS requires.
*/}}
{{- define "cdb.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cdb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels. Call with (dict "root" $ "name" "signal-engine" "component" "pipeline"). */}}
{{- define "cdb.labels" -}}
helm.sh/chart: {{ include "cdb.chart" .root }}
{{ include "cdb.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component | default .name }}
app.kubernetes.io/part-of: cdb
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* Selector labels: stable for the life of a release. */}}
{{- define "cdb.selectorLabels" -}}
app.kubernetes.io/name: {{ .name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .root.Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* An image reference: repository:tag, or repository@digest when a digest is given. */}}
{{- define "cdb.imageRef" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}
{{- end -}}

{{- define "cdb.image" -}}
{{- include "cdb.imageRef" (dict "repository" .Values.image.repository "digest" .Values.image.digest "tag" (.Values.image.tag | default .Chart.AppVersion)) -}}
{{- end -}}

{{- define "cdb.redis.secretName" -}}
{{- .Values.redis.auth.existingSecret | default "cdb-redis" -}}
{{- end -}}
{{- define "cdb.postgres.secretName" -}}
{{- .Values.postgres.auth.existingSecret | default "cdb-postgres" -}}
{{- end -}}
{{- define "cdb.notifier.vapidSecretName" -}}
{{- .Values.notifier.vapidExistingSecret | default "cdb-notifier-vapid" -}}
{{- end -}}
{{- define "cdb.admin.secretName" -}}
{{- .Values.riskManager.adminAuth.existingSecret | default "cdb-admin" -}}
{{- end -}}
{{- define "cdb.grafana.secretName" -}}
{{- .Values.grafana.auth.existingSecret | default "cdb-grafana" -}}
{{- end -}}

{{/*
A Secret value that survives `helm upgrade`: the value already in the cluster, else the
one given in values, else a random one. Call with
(dict "root" $ "secret" "cdb-redis" "key" "redis-password" "given" .Values.redis.auth.password).
*/}}
{{- define "cdb.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else if .given -}}
{{- .given | b64enc -}}
{{- else -}}
{{- randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Storage class of a claim: the hostPath PVs' class, or the dynamic one. */}}
{{- define "cdb.storageClassName" -}}
{{- if eq .Values.storage.mode "hostPath" -}}
storageClassName: {{ .Values.storage.hostPathStorageClassName | quote }}
{{- else if .Values.storage.storageClassName -}}
storageClassName: {{ .Values.storage.storageClassName | quote }}
{{- end -}}
{{- end -}}

{{/* Exchange endpoints: the simulator when it runs, else MEXC. */}}
{{- define "cdb.mexcWsUrl" -}}
{{- if .Values.exchange.simulator.enabled -}}ws://mexc-sim:8010/edge{{- else -}}{{ .Values.exchange.wsUrl }}{{- end -}}
{{- end -}}
{{- define "cdb.mexcRestUrl" -}}
{{- if .Values.exchange.simulator.enabled -}}http://mexc-sim:8010{{- else -}}{{ .Values.exchange.restUrl }}{{- end -}}
{{- end -}}

{{/*
Pod template annotations: checkov skips (each with its reason; docs/CHART.md lists them)
and a checksum of the shared config so a config change rolls the pods.
*/}}
{{- define "cdb.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_43=Images are referenced by tag by default because digests of locally built images are not known before the build; set image.digest (and redis/postgres/prometheus/grafana .image.digest) to pin.
checkov.io/skip2: CKV_K8S_15=IfNotPresent is required for images loaded into kind or built on Docker Desktop (no registry); set image.pullPolicy to Always with a registry.
checkov.io/skip3: CKV_K8S_35=The services read REDIS_PASSWORD/POSTGRES_PASSWORD from the environment (12-factor contract); values come from Secrets via secretKeyRef, never from the ConfigMap.
checkov.io/skip4: CKV_K8S_40=The stack runs as UID/GID 1000 (botuser in the image, the seed's contract) so hostPath volumes on Docker Desktop stay owned by one known user.
{{- end -}}

{{/* The restricted securityContext of every pod and every container. */}}
{{- define "cdb.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}
{{- define "cdb.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/* Probes: kernel services pass /readyz (startup, readiness) and /livez (liveness), so a
   quiet market neither restarts a pod nor hides it from Prometheus; others their own. */}}
{{- define "cdb.httpProbes" -}}
startupProbe:
  httpGet: {path: {{ .path | default "/health" }}, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 60
readinessProbe:
  httpGet: {path: {{ .path | default "/health" }}, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
livenessProbe:
  httpGet: {path: {{ .livenessPath | default .path | default "/health" }}, port: http}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}

{{/* Secret-backed environment of every Python service (passwords never in a ConfigMap).
   Call with (dict "root" $ "user" "signal_engine"): the service logs in to Redis as its own
   ACL user (cdb.core.acl), with that user's password; without a user, no Redis password. */}}
{{- define "cdb.secretEnv" -}}
{{- if .user -}}
- name: REDIS_USERNAME
  value: {{ .user | quote }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "cdb.redis.secretName" .root }}, key: {{ printf "%s-password" .user }}}
{{ end -}}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "cdb.postgres.secretName" .root }}, key: postgres-password}
{{- end -}}

{{/* The Redis ACL users, one per service plus the operator and the read-only viewer:
   the keys of cdb.core.acl.ACCESS (a test keeps the two equal). The Secret holds
   `redis-password` (the admin, `default`) and `<user>-password` for each. */}}
{{- define "cdb.redisUsers" -}}
{{- list "bot_ws" "bot_rest" "signal_engine" "risk_manager" "execution_service" "ml_advisor" "notifier" "operator" "console" "viewer" | toJson -}}
{{- end -}}

{{/* The writable places of a read-only root: /data and /tmp. */}}
{{- define "cdb.scratchMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end -}}
{{- define "cdb.scratchVolumes" -}}
- name: data
  emptyDir: {sizeLimit: 512Mi}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- end -}}

{{/*
The start order, enforced by readiness and retries: an init container in the app image
that returns once each dependency answers (Redis PING with the password, a PostgreSQL
login, or HTTP 200 from an upstream /health), retrying with capped backoff.
Call with (dict "root" $ "user" "signal_engine" "targets" (list "redis" "postgres" "http://signal-engine:8001/health")).
*/}}
{{- define "cdb.waitFor" -}}
- name: wait-for-dependencies
  image: {{ include "cdb.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command:
    - python
    - -c
    - |
      import os, sys, time, urllib.request
      def redis_up():
          import redis
          client = redis.Redis(host=os.environ["REDIS_HOST"], port=int(os.environ["REDIS_PORT"]), username=os.environ.get("REDIS_USERNAME", "default"), password=os.environ["REDIS_PASSWORD"], socket_timeout=3)
          return bool(client.ping())
      def postgres_up():
          import psycopg
          with psycopg.connect(host=os.environ["POSTGRES_HOST"], port=os.environ["POSTGRES_PORT"], dbname=os.environ["POSTGRES_DB"], user=os.environ["POSTGRES_USER"], password=os.environ["POSTGRES_PASSWORD"], connect_timeout=3) as conn:
              return conn.execute("select 1").fetchone() == (1,)
      def http_up(url):
          with urllib.request.urlopen(url, timeout=3) as answer:
              return answer.status == 200
      checks = {"redis": redis_up, "postgres": postgres_up}
      for target in sys.argv[1:]:
          check = checks.get(target) or (lambda url=target: http_up(url))
          delay = 0.5
          while True:
              try:
                  if check():
                      print(f"ready: {target}", flush=True)
                      break
                  problem = "not ready"
              except Exception as error:
                  problem = type(error).__name__
              print(f"waiting for {target}: {problem}; retry in {delay:.1f}s", flush=True)
              time.sleep(delay)
              delay = min(delay * 2, 10.0)
    {{- range .targets }}
    - {{ . | quote }}
    {{- end }}
  envFrom:
    - configMapRef: {name: cdb-config}
  env:
    {{- include "cdb.secretEnv" (dict "root" .root "user" (.user | default "")) | nindent 4 }}
  {{- include "cdb.containerSecurityContext" .root | nindent 2 }}
  resources:
    {{- toYaml .root.Values.startOrder.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/*
The Python services the chart runs as Deployments: workload name → values key, module,
port, dependencies (Redis/PostgreSQL) and upstream stage (the seed's start order).
*/}}
{{- /* flags: the Python options; -OO drops docstrings and asserts (about 3 MiB a process,
       docs/CHART.md), except where a library needs its docstrings: xgboost's
       scikit-learn wrapper edits its own at import (cdb.demo.plan.KEEP_DOCSTRINGS). */ -}}
{{- define "cdb.pythonServices" -}}
bot-rest: {key: botRest, module: cdb.bot_rest, port: 8004, component: market-data, needs: [redis], upstream: [], flags: [-OO]}
signal-engine: {key: signalEngine, module: cdb.signal_engine, port: 8001, component: pipeline, needs: [redis, postgres], upstream: ["http://bot-ws:8000/health"], flags: [-OO]}
risk-manager: {key: riskManager, module: cdb.risk_manager, port: 8002, component: pipeline, needs: [redis, postgres], upstream: ["http://signal-engine:8001/health"], flags: [-OO]}
execution-service: {key: executionService, module: cdb.execution_service, port: 8003, component: pipeline, needs: [redis, postgres], upstream: ["http://signal-engine:8001/health"], flags: [-OO]}
ml-advisor: {key: mlAdvisor, module: cdb.ml_advisor, port: 8005, component: advisor, needs: [redis, postgres], upstream: [], flags: []}
notifier: {key: notifier, module: cdb.notifier, port: 8006, component: notifications, needs: [redis, postgres], upstream: [], flags: [-OO]}
{{- end -}}

{{/*
The screener pod (bot_ws), defined once. The chart's static StatefulSet renders it with
its labels and env; the ConfigMap cdb-screener-pod holds it without them, and the
operator builds every TradingBot's pods from that file, adding only the per-bot fields
(labels, the workload-hash annotation, env). Call with (dict "root" $) plus, optionally,
"labels", "annotations", "envFrom" and "env" (YAML text).
*/}}
{{- define "cdb.screenerPod" -}}
{{- $root := .root -}}
{{- $targets := list "redis" -}}
{{- if and $root.Values.startOrder.waitForUpstream $root.Values.botRest.enabled -}}
{{- $targets = append $targets "http://bot-rest:8004/health" -}}
{{- end -}}
metadata:
  {{- with .labels }}
  labels:
    {{- . | nindent 4 }}
  {{- end }}
  annotations:
    prometheus.io/scrape: "true"
    prometheus.io/port: "8000"
    {{- with .annotations }}
    {{- . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: cdb
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  {{- include "cdb.podSecurityContext" $root | nindent 2 }}
  terminationGracePeriodSeconds: 30
  initContainers:
    {{- include "cdb.waitFor" (dict "root" $root "user" "bot_ws" "targets" $targets) | nindent 4 }}
  containers:
    - name: bot-ws
      image: {{ include "cdb.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: [python, -OO, -m, cdb.bot_ws]
      ports:
        - name: http
          containerPort: 8000
          protocol: TCP
      {{- with .envFrom }}
      envFrom:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with .env }}
      env:
        {{- . | nindent 8 }}
      {{- end }}
      {{- include "cdb.containerSecurityContext" $root | nindent 6 }}
      resources:
        {{- toYaml $root.Values.botWs.resources | nindent 8 }}
      {{- include "cdb.httpProbes" (dict "path" "/readyz" "livenessPath" "/livez") | nindent 6 }}
      volumeMounts:
        {{- include "cdb.scratchMounts" $root | nindent 8 }}
  volumes:
    {{- include "cdb.scratchVolumes" $root | nindent 4 }}
{{- end -}}
