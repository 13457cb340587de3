#!/usr/bin/env bash
# End to end on kind (a machine with Docker and kind; CI: .github/workflows/kind-e2e.yaml):
# build the image, load it into kind, install the chart with mexc_sim as the exchange,
# wait for the TradingBot to be Ready and for a paper order in PostgreSQL.
# Usage: make kind-e2e   (KEEP_CLUSTER=1 keeps the cluster afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-cdb-e2e}
NAMESPACE=cdb
IMAGE=${IMAGE:-claire-de-binare}
TAG=e2e
VALUES=charts/cdb/ci/kind-values.yaml
BOT=mexc-momentum
HELM=${HELM:-helm}
KUBECTL=${KUBECTL:-kubectl}
# The query the run waits on: a paper order written by execution_service.
ORDERS_SQL="SELECT count(*) FROM orders WHERE mode = 'paper'"
ORDER_TIMEOUT_S=${ORDER_TIMEOUT_S:-900}

for tool in docker kind "$HELM" "$KUBECTL"; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is missing" >&2; exit 2; }
done

step() { printf '\n== %s\n' "$*"; }
diagnose() {
  step "diagnostics"
  "$KUBECTL" -n "$NAMESPACE" get pods,tb,statefulsets,events -o wide || true
  for pod in $("$KUBECTL" -n "$NAMESPACE" get pods -o name 2>/dev/null); do
    echo "--- $pod"; "$KUBECTL" -n "$NAMESPACE" logs "$pod" --all-containers --tail=60 || true
  done
}
cleanup() {
  status=$?
  [ "$status" -eq 0 ] || diagnose
  [ -n "${KEEP_CLUSTER:-}" ] || kind delete cluster --name "$CLUSTER" || true
  exit "$status"
}

step "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
trap cleanup EXIT

step "image $IMAGE:$TAG"
docker build -t "$IMAGE:$TAG" .
kind load docker-image "$IMAGE:$TAG" --name "$CLUSTER"

step "restricted namespace"
"$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" label namespace "$NAMESPACE" --overwrite \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted

step "helm install (simulator as the exchange)"
"$HELM" upgrade --install cdb charts/cdb --namespace "$NAMESPACE" -f "$VALUES" \
  --set image.repository="$IMAGE" --set image.tag="$TAG" --wait --timeout 10m

step "TradingBot $BOT Ready"
"$KUBECTL" -n "$NAMESPACE" wait --for=condition=Ready "tradingbot/$BOT" --timeout=300s
"$KUBECTL" -n "$NAMESPACE" get tb
"$KUBECTL" -n "$NAMESPACE" rollout status "statefulset/$BOT-bot-ws" --timeout=300s 2>/dev/null \
  || "$KUBECTL" -n "$NAMESPACE" get statefulsets

step "a paper order appears (up to ${ORDER_TIMEOUT_S}s)"
deadline=$(( $(date +%s) + ORDER_TIMEOUT_S ))
while :; do
  count=$("$KUBECTL" -n "$NAMESPACE" exec statefulset/postgres -- sh -c \
    "psql -U \"\$POSTGRES_USER\" -d \"\$POSTGRES_DB\" -tAc \"$ORDERS_SQL\"" 2>/dev/null || echo 0)
  if [ "${count:-0}" -gt 0 ]; then
    echo "kind-e2e: $count paper order(s) written"
    break
  fi
  [ "$(date +%s)" -lt "$deadline" ] || { echo "kind-e2e: no paper order after ${ORDER_TIMEOUT_S}s" >&2; exit 1; }
  sleep 10
done

step "backup job"
"$KUBECTL" -n "$NAMESPACE" create job --from=cronjob/cdb-backup cdb-backup-e2e
"$KUBECTL" -n "$NAMESPACE" wait --for=condition=complete job/cdb-backup-e2e --timeout=300s
echo "kind-e2e: passed"
