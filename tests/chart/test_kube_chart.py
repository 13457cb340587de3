"""The chart and manifests/ on a real kube-apiserver with its controllers, a scheduler and a
kwok node (tests/support/cluster.py): what a user does first, `helm install` and `kubectl apply`.

Every release goes into its own namespace labelled
``pod-security.kubernetes.io/enforce=restricted``, so the API server's PodSecurity
admission decides every pod the controllers create. kwok marks scheduled pods Running and
Ready (no container runs: probes, images and volume mounts need a real kubelet, see
docs/CHART.md). hostPath claims bind to the volumes of ``k8s/pv-hostpath.yaml`` through the
real PersistentVolume controller; dynamic claims are provisioned by kwok's
``kwok-volume`` StorageClass, standing in for kind's local-path provisioner.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdb.core.acl import ACCESS
from tests.support.cluster import ROOT, ControlPlane

CHART = ROOT / "charts" / "cdb"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
PV_FILE = ROOT / "k8s" / "pv-hostpath.yaml"
GENERATED = {"cdb-redis": "redis-password", "cdb-postgres": "postgres-password",
             "cdb-admin": "admin-token", "cdb-grafana": "admin-password",
             "cdb-notifier-vapid": "vapid-private-key",  # the notifier's WebPush key
             "cdb-console": "password"}  # the console's login  # fmt: skip


def hostpath_volumes(kube: ControlPlane, namespace: str) -> None:
    """k8s/pv-hostpath.yaml for a release in ``namespace`` (its documented edit: the
    claimRef's namespace; the names get the namespace too, since PVs are cluster-wide)."""
    docs = [d for d in yaml.safe_load_all(PV_FILE.read_text()) if d]
    for pv in docs:
        pv["metadata"]["name"] = f"{pv['metadata']['name']}-{namespace}"[:63]
        pv["spec"]["claimRef"]["namespace"] = namespace
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": docs}))  # fmt: skip


def values_need(path: Path | None) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) if path else {}


def prepare(kube: ControlPlane, namespace: str, values: dict[str, Any]) -> None:
    """What the values file's comments tell a user to create before installing."""
    mode = (values.get("storage") or {}).get("mode", "hostPath")
    if mode == "hostPath":
        hostpath_volumes(kube, namespace)
    existing = {  # the Redis Secret: the admin's password and one per ACL user
        "cdb-redis-auth": ["redis-password", *(f"{user}-password" for user in ACCESS)],
        "cdb-postgres-auth": ["postgres-password"],
        "cdb-admin-auth": ["admin-token"],
        "cdb-grafana-auth": ["admin-password"],
    }
    for component, key in (
        ("redis", "auth"), ("postgres", "auth"), ("riskManager", "adminAuth"), ("grafana", "auth")
    ):  # fmt: skip
        secret = ((values.get(component) or {}).get(key) or {}).get("existingSecret")
        if secret:
            literals = [f"--from-literal={k}=test-only-{secret}-{k}" for k in existing[secret]]
            kube.kubectl("-n", namespace, "create", "secret", "generic", secret, *literals)
    console = ((values.get("console") or {}).get("auth") or {}).get("existingSecret")
    if console:
        kube.kubectl("-n", namespace, "create", "secret", "generic", console,
                     "--from-literal=password=test-only-console-password",
                     "--from-literal=session-secret=test-only-session-secret")  # fmt: skip
    credentials = ((values.get("trading") or {}).get("credentials") or {}).get("existingSecret")
    if credentials:
        kube.kubectl("-n", namespace, "create", "secret", "generic", credentials,
                     "--from-literal=mexc-api-key=test-only-key",
                     "--from-literal=mexc-api-secret=test-only-secret")  # fmt: skip


def helm(kube: ControlPlane, *args: str, timeout: float = 240) -> str:
    return kube.run([str(ROOT / ".tools" / "bin" / "helm"), *args], timeout=timeout).stdout


def install(kube: ControlPlane, namespace: str, values: Path | None = None) -> None:
    extra = ["-f", str(values)] if values else []
    helm(kube, "install", "cdb", str(CHART), "-n", namespace, "--wait", "--timeout", "180s",
         *extra)  # fmt: skip


# A controller that lost an optimistic-concurrency race (another controller, e.g. the
# claim's protection finalizer, wrote the object first) records the failure and retries
# with the new version: not a failure of the release (the claims are then Bound, below).
CONFLICT = "the object has been modified; please apply your changes to the latest version"


def failed_creates(kube: ControlPlane, namespace: str) -> list[str]:
    events = kube.get("events", "-n", namespace)["items"]
    return [
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e['message']}"
        for e in events
        if e.get("reason") in ("FailedCreate", "ProvisioningFailed")
        and CONFLICT not in e.get("message", "")
    ]


def assert_release_running(kube: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    """Every pod admitted and Ready, every claim Bound, no FailedCreate event."""
    assert failed_creates(kube, namespace) == []
    pods = kube.get("pods", "-n", namespace)["items"]
    assert pods, "the release made no pod"
    for pod in pods:
        if pod["status"].get("phase") == "Succeeded":
            continue
        ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        assert ready.get("Ready") == "True", (pod["metadata"]["name"], pod["status"])
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 1000
    claims = kube.get("pvc", "-n", namespace)["items"]
    assert claims and all(c["status"]["phase"] == "Bound" for c in claims), [
        (c["metadata"]["name"], c["status"]) for c in claims
    ]
    return pods


def secret_value(kube: ControlPlane, namespace: str, name: str, key: str) -> str:
    data = kube.get("secret", name, "-n", namespace)["data"]
    return base64.b64decode(data[key]).decode()


def test_the_default_release_runs_under_the_restricted_profile(
    kube: ControlPlane, kube_namespace: str
) -> None:
    prepare(kube, kube_namespace, {})
    install(kube, kube_namespace)
    pods = assert_release_running(kube, kube_namespace)
    names = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
    assert {"redis", "postgres", "signal-engine", "risk-manager", "execution-service",
            "cdb-operator", "prometheus", "grafana", "console"} <= names  # fmt: skip
    # hostPath mode: each claim is bound to its volume from k8s/pv-hostpath.yaml.
    for claim in kube.get("pvc", "-n", kube_namespace)["items"]:
        volume = kube.get("pv", claim["spec"]["volumeName"])
        assert volume["spec"]["storageClassName"] == "cdb-hostpath"
        assert volume["spec"]["hostPath"]["path"].startswith("/var/lib/cdb/")


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_every_ci_values_file_installs_and_becomes_ready(
    kube: ControlPlane, kube_namespace: str, values: Path
) -> None:
    prepare(kube, kube_namespace, values_need(values))
    install(kube, kube_namespace, values)
    assert_release_running(kube, kube_namespace)


def test_upgrade_keeps_generated_passwords_and_uninstall_keeps_data(
    kube: ControlPlane, kube_namespace: str
) -> None:
    prepare(kube, kube_namespace, {})
    install(kube, kube_namespace)
    before = {n: secret_value(kube, kube_namespace, n, key) for n, key in GENERATED.items()}
    assert all(len(value) >= 16 for value in before.values()), "weak generated password"

    helm(kube, "upgrade", "cdb", str(CHART), "-n", kube_namespace, "--wait", "--timeout", "180s",
         "--set", "signalEngine.replicas=2")  # fmt: skip
    after = {n: secret_value(kube, kube_namespace, n, key) for n, key in GENERATED.items()}
    assert after == before, "helm upgrade replaced a generated password"

    claims = {c["metadata"]["name"] for c in kube.get("pvc", "-n", kube_namespace)["items"]}
    helm(kube, "uninstall", "cdb", "-n", kube_namespace, "--wait")
    secrets = kube.get("secrets", "-n", kube_namespace)["items"]
    left_secrets = {s["metadata"]["name"] for s in secrets}
    assert set(GENERATED) <= left_secrets, left_secrets
    left_claims = {c["metadata"]["name"] for c in kube.get("pvc", "-n", kube_namespace)["items"]}
    assert left_claims == claims
    assert kube.get("deployments", "-n", kube_namespace)["items"] == []


def test_a_privileged_pod_is_refused_in_the_release_namespace(
    kube: ControlPlane, kube_namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-shell", "namespace": kube_namespace},
        "spec": {
            "containers": [
                {"name": "sh", "image": "debian", "securityContext": {"privileged": True}}
            ]
        },
    }
    done = kube.run(["kubectl", "apply", "-f", "-"], input=json.dumps(pod), check=False)
    assert done.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in done.stderr
    assert "privileged" in done.stderr


def test_manifests_apply_converges_and_kubectl_diff_is_clean(kube: ControlPlane) -> None:
    """manifests/ as its README says: Secrets first, CRDs, then the rest; a second apply
    changes nothing and `kubectl diff` exits 0 (it exits 1 on any difference)."""
    namespace = "cdb"  # manifests/ are rendered for namespace cdb
    kube.kubectl("create", "namespace", namespace)
    kube.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    hostpath_volumes(kube, namespace)
    for name, key in GENERATED.items():
        kube.kubectl("-n", namespace, "create", "secret", "generic", name,
                     f"--from-literal={key}=test-only-{name}")  # fmt: skip
    kube.kubectl("apply", "-f", str(ROOT / "manifests" / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "crd/tradingbots.cdb.io", "--timeout=30s")
    kube.kubectl("apply", "-f", str(ROOT / "manifests"))

    second = kube.kubectl("apply", "-f", str(ROOT / "manifests"))
    changed = [line for line in second.splitlines() if not line.endswith(" unchanged")]
    assert changed == [], changed
    diff = kube.run(["kubectl", "diff", "-f", str(ROOT / "manifests")], check=False)
    assert diff.returncode == 0, diff.stdout[-3000:] + diff.stderr
    kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pods", "--all",
                 "--timeout=120s")  # fmt: skip
    assert failed_creates(kube, namespace) == []
    kube.kubectl("delete", "namespace", namespace, "--wait=false")
