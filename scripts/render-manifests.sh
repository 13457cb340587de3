#!/usr/bin/env bash
# Render the chart with its default values into plain manifests (for `kubectl apply`
# without helm): OUT/cdb.yaml and OUT/crds/. The chart's Secrets are left out (their
# passwords are generated per install); create them first, see manifests/README.md.
# Usage: scripts/render-manifests.sh [OUT]   (default: manifests). tests/chart/test_manifests.py
# renders into a temporary folder and compares, so manifests/ never drifts from the chart.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-manifests}
helm=${HELM:-.tools/bin/helm}
mkdir -p "$out/crds"
"$helm" template cdb charts/cdb --namespace cdb --kube-version 1.37 \
  | python3 -c '
import re, sys
docs = re.split(r"(?m)^---\n", sys.stdin.read())
kept = [d for d in docs if d.strip() and not re.search(r"(?m)^kind: Secret$", d)]
sys.stdout.write("".join("---\n" + d for d in kept))
' > "$out/cdb.yaml"
rm -f "$out"/crds/*.yaml
for crd in charts/cdb/crds/*.yaml; do
  [ -e "$crd" ] || continue
  cp "$crd" "$out/crds/"
done
echo "rendered $out/cdb.yaml and $out/crds/"
