# crd-check: kube-apiserver's create path for custom resources (structural pruning,
# defaulting, OpenAPI schema validation and the x-kubernetes-validations CEL rules) and
# for the CRD itself, from k8s.io/apiextensions-apiserver v0.37.2 (pinned with go.sum),
# built from scripts/setup.d/crd-check/ with the Go module proxy. tests/operator/test_crd.py runs
# it on every TradingBot it checks. Sourced by scripts/setup.sh (go_tool). Idempotent.
go_tool crd-check "k8s.io/apiextensions-apiserver v0.37.2; a few minutes the first time"
