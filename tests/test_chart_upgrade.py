"""Generated passwords survive `helm upgrade`: the real helm renders the chart twice against
an emulated Kubernetes API (KMock) — first an install into an empty namespace, then an
upgrade after the Secrets of the install exist — and its `lookup` must reuse them."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import yaml

from tests.test_chart import CHART, HELM, tool

VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
KINDS = {
    "v1/secrets": "Secret",
    "v1/configmaps": "ConfigMap",
    "v1/services": "Service",
    "v1/serviceaccounts": "ServiceAccount",
    "v1/persistentvolumeclaims": "PersistentVolumeClaim",
    "apps/v1/deployments": "Deployment",
    "apps/v1/statefulsets": "StatefulSet",
    "batch/v1/cronjobs": "CronJob",
    "networking.k8s.io/v1/networkpolicies": "NetworkPolicy",
    "rbac.authorization.k8s.io/v1/roles": "Role",
    "rbac.authorization.k8s.io/v1/rolebindings": "RoleBinding",
    "cdb.io/v1alpha1/tradingbots": "TradingBot",
}
SECRETS = {"cdb-redis": "redis-password", "cdb-postgres": "postgres-password",
           "cdb-grafana": "admin-password",
           "cdb-notifier-vapid": "vapid-private-key"}  # the notifier's WebPush key  # fmt: skip


def serve_cluster(kmock: Any) -> None:
    """The resources the chart renders, as a 1.37 API server would list them."""
    kmock.resources["v1/namespaces"] = {"kind": "Namespace", "namespaced": False, "verbs": VERBS}
    for key, kind in KINDS.items():
        kmock.resources[key] = {"kind": kind, "namespaced": True, "verbs": VERBS}
    kmock.objects["v1/namespaces", None, "cdb"] = {"metadata": {"name": "cdb"}}
    kmock["get /version"] << {"major": "1", "minor": "37", "gitVersion": "v1.37.1"}
    # KMock lists the core group as "/v1"; a real server (and client-go) says "v1".
    kmock["get /api/v1"] << {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [
            {
                "name": key.split("/")[-1],
                "kind": kind,
                "namespaced": True,
                "singularName": kind.lower(),
                "verbs": VERBS,
            }
            for key, kind in KINDS.items()
            if key.startswith("v1/")
        ],
    }


async def render_against(kmock: Any, tmp_path: Path, *args: str) -> dict[str, dict[str, Any]]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url)}}],
                "users": [{"name": "test", "user": {}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    # helm runs while this event loop keeps serving the emulated API.
    proc = await asyncio.create_subprocess_exec(
        tool(HELM), "template", "cdb", str(CHART), "--namespace", "cdb", "--dry-run=server",
        "--disable-openapi-validation", "--show-only", "templates/secrets.yaml",
        "--kubeconfig", str(kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    docs = [d for d in yaml.safe_load_all(out.decode()) if d]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}


def password(secret: dict[str, Any]) -> str:
    (value,) = secret["data"].values()
    return base64.b64decode(value).decode()


async def test_generated_passwords_survive_helm_upgrade(kmock: Any, tmp_path: Path) -> None:
    serve_cluster(kmock)
    installed = await render_against(kmock, tmp_path)
    assert set(installed) == set(SECRETS)
    first = {name: password(secret) for name, secret in installed.items()}
    vapid = first.pop("cdb-notifier-vapid")
    assert vapid.startswith("-----BEGIN EC PRIVATE KEY-----")  # generated once, then kept
    assert all(len(value) == 32 for value in first.values())
    first["cdb-notifier-vapid"] = vapid

    # What `helm install` leaves in the cluster: the Secrets, owned by the release.
    for name, secret in installed.items():
        metadata = {
            **secret["metadata"],
            "annotations": {**secret["metadata"]["annotations"],
                            "meta.helm.sh/release-name": "cdb",
                            "meta.helm.sh/release-namespace": "cdb"},
        }  # fmt: skip
        kmock.objects["v1/secrets", "cdb", name] = {**secret, "metadata": metadata}

    upgraded = await render_against(kmock, tmp_path)
    assert {name: password(secret) for name, secret in upgraded.items()} == first

    # A second fresh install (nothing in the cluster) would get new random passwords:
    # the reuse above comes from the lookup, not from a fixed value.
    for name in SECRETS:
        del kmock.objects["v1/secrets", "cdb", name]
    fresh = await render_against(kmock, tmp_path)
    assert all(password(fresh[name]) != first[name] for name in SECRETS)
