# crd-check: kube-apiserver's create path for custom resources (structural pruning,
# defaulting, OpenAPI schema validation and the x-kubernetes-validations CEL rules) and
# for the CRD itself, from k8s.io/apiextensions-apiserver v0.37.2 (pinned with go.sum),
# built from scripts/setup.d/crd-check/ with the Go module proxy. tests/test_crd.py runs
# it on every TradingBot it checks. Sourced by scripts/setup.sh (say, TOOLS). Idempotent.
CRD_SRC=scripts/setup.d/crd-check
CRD_STAMP="$TOOLS/.crd-check-$(cat "$CRD_SRC/go.mod" "$CRD_SRC/go.sum" "$CRD_SRC/main.go" | sha256sum | cut -c1-16)"
if [ ! -x "$TOOLS/bin/crd-check" ] || [ ! -f "$CRD_STAMP" ]; then
  if ! command -v go >/dev/null; then
    say "missing: go (to build crd-check). Install Go 1.26+ (apt: golang-go; macOS: brew install go)" >&2
    exit 1
  fi
  say "building crd-check (k8s.io/apiextensions-apiserver v0.37.2; a few minutes the first time)"
  (cd "$CRD_SRC" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath -o "$OLDPWD/$TOOLS/bin/crd-check" .)
  rm -f "$TOOLS"/.crd-check-*
  touch "$CRD_STAMP"
fi
