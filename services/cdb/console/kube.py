"""The TradingBot through the Kubernetes API server, as the pod's service account.

Only two calls: read the bot, and merge-patch its spec. The API server validates the patch
against the CRD's schema (a bad threshold is refused there, with its message), records it
in its audit log under the console's service account, and the operator reconciles it like
any ``kubectl`` change; the ``cdb.io/changed-by`` annotation names the console in the
operator's own audit trail (``config_audit``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

__all__ = ["BotClient", "KubeError"]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
GROUP_VERSION = "cdb.io/v1alpha1"
ACTOR_ANNOTATION = "cdb.io/changed-by"
FIELD_MANAGER = "cdb-console"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"API server answered {status}: {message}")
        self.status = status


class BotClient:
    """GET and merge-PATCH one TradingBot (``namespace/name``)."""

    def __init__(
        self, api: str, namespace: str, name: str, account: Path = SERVICE_ACCOUNT
    ) -> None:
        self.path = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/tradingbots/{name}"
        self.api = api
        self.account = account

    def _client(self) -> httpx.AsyncClient:
        headers = {"User-Agent": FIELD_MANAGER}
        token = self.account / "token"
        if token.exists():  # read per call: the kubelet rotates it
            headers["Authorization"] = f"Bearer {token.read_text().strip()}"
        verify: Any = True
        ca = self.account / "ca.crt"
        if self.api.startswith("https") and ca.exists():
            verify = ssl.create_default_context(cafile=str(ca))
        return httpx.AsyncClient(base_url=self.api, headers=headers, verify=verify, timeout=10)

    async def get(self) -> dict[str, Any]:
        async with self._client() as client:
            reply = await client.get(self.path)
        return _answer(reply)

    async def patch_spec(self, spec: dict[str, Any], actor: str) -> dict[str, Any]:
        body = {"metadata": {"annotations": {ACTOR_ANNOTATION: actor}}, "spec": spec}
        async with self._client() as client:
            reply = await client.patch(
                self.path,
                json=body,
                params={"fieldManager": FIELD_MANAGER},
                headers={"Content-Type": "application/merge-patch+json"},
            )
        return _answer(reply)


def _answer(reply: httpx.Response) -> dict[str, Any]:
    if reply.status_code >= 400:
        try:
            message = str(reply.json().get("message", reply.text))
        except ValueError:
            message = reply.text
        raise KubeError(reply.status_code, message[:500])
    body: dict[str, Any] = reply.json()
    return body
