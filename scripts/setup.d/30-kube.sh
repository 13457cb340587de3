# A local Kubernetes control plane for the tests and `make cluster`: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler v1.37.2 as one multi-call binary
# (scripts/setup.d/kube/: k8s.io/kubernetes and the etcd server it pins, go.sum committed)
# and kwok v0.8.0 (scripts/setup.d/kwok/: simulated nodes whose pods become Ready), both
# from the Go module proxy, version-stamped so kubectl and helm can parse the server's
# version. The first build takes about 15 minutes on 2 cores and ~5 GB of Go caches; later
# setups skip (same sources) or only re-link (warm cache). Sourced by scripts/setup.sh.
if ! command -v openssl >/dev/null; then
  say "installing openssl (tests/support/cluster.py makes the control plane's certificates with it)"
  apt_install openssl
fi
KUBE_VERSION=v1.37.2
KUBE_BUILD_DATE=2026-12-07T00:00:00Z   # fixed, so the build is reproducible
kube_build() {
  # kube_build NAME SRC PACKAGE WHAT LDFLAGS [GOFLAGS [CGO_ENABLED]]: go build PACKAGE in
  # scripts/setup.d/SRC into .tools/bin/NAME unless it is there from the same sources.
  local name=$1 src="scripts/setup.d/$2" pkg=$3 what=$4 ldflags=$5 goflags=${6:-} cgo=${7:-1}
  local stamp
  stamp="$TOOLS/.$name-$( { cat "$src"/go.mod "$src"/go.sum; find "$src" -maxdepth 1 -name '*.go' -exec cat {} +; echo "$pkg $ldflags $goflags $cgo"; } | sha256sum | cut -c1-16)"
  if [ -x "$TOOLS/bin/$name" ] && [ -f "$stamp" ]; then return; fi
  if ! command -v go >/dev/null; then
    say "missing: go (to build $name). Install Go 1.26+ (apt: golang-go; macOS: brew install go)" >&2
    exit 1
  fi
  say "building $name ($what)"
  (cd "$src" && CGO_ENABLED=$cgo GOTOOLCHAIN=local GOFLAGS="-mod=readonly $goflags" \
    go build -trimpath -ldflags "-s -w $ldflags" -o "$OLDPWD/$TOOLS/bin/$name.new" "$pkg")
  mv -f "$TOOLS/bin/$name.new" "$TOOLS/bin/$name"
  rm -f "$TOOLS/.$name-"*
  touch "$stamp"
}
kube_ldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=37"
  kube_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$KUBE_BUILD_DATE"
done
kube_build kube kube . "etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy $KUBE_VERSION; ~10 min the first time" "$kube_ldflags"
for name in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  ln -sf kube "$TOOLS/bin/$name"
done
kube_build kwok kwok sigs.k8s.io/kwok/cmd/kwok "kwok v0.8.0; ~2 min the first time" ""
# kwok's stage definitions, from the same pinned module: nodes initialise and renew their
# lease; pods become Ready, complete and are deleted; claims of the `kwok-volume`
# StorageClass are provisioned (the chart's storage.mode=dynamic, as on kind).
kwok_dir=$(cd scripts/setup.d/kwok && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
mkdir -p "$TOOLS/kwok-stages"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
  volume/fast/storage-class.yaml volume/fast/pvc-provision.yaml volume/fast/pv-bind.yaml \
  volume/fast/pv-delete.yaml volume/fast/pvc-delete.yaml; do
  install -m 0644 "$kwok_dir/kustomize/stage/$f" "$TOOLS/kwok-stages/$(basename "$f")"
done
