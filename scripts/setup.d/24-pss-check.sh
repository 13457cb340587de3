# pss-check: the Pod Security Standards checks of kube-apiserver's admission controller
# (k8s.io/pod-security-admission v0.37.2, pinned with go.sum) as a small command, built
# from scripts/setup.d/pss-check/ with the Go module proxy. tests/test_chart.py runs it
# on every rendered pod template. Sourced by scripts/setup.sh (say, TOOLS). Idempotent.
PSS_SRC=scripts/setup.d/pss-check
PSS_STAMP="$TOOLS/.pss-check-$(cat "$PSS_SRC/go.mod" "$PSS_SRC/go.sum" "$PSS_SRC/main.go" | sha256sum | cut -c1-16)"
if [ ! -x "$TOOLS/bin/pss-check" ] || [ ! -f "$PSS_STAMP" ]; then
  if ! command -v go >/dev/null; then
    say "missing: go (to build pss-check). Install Go 1.26+ (apt: golang-go; macOS: brew install go)" >&2
    exit 1
  fi
  say "building pss-check (k8s.io/pod-security-admission v0.37.2)"
  (cd "$PSS_SRC" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath -o "$OLDPWD/$TOOLS/bin/pss-check" .)
  rm -f "$TOOLS"/.pss-check-*
  touch "$PSS_STAMP"
fi
