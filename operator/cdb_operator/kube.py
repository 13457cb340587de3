"""A small async Kubernetes API client for the objects the operator owns.

kopf watches TradingBots with its own client; this one creates and patches the owned
ConfigMap and StatefulSet and reads their status. It connects with the same
:class:`kopf.ConnectionInfo` kopf logs in with (service account in a pod, kubeconfig on a
laptop, an explicit server in tests), and re-logs-in once on 401 (rotated tokens).
Updates are JSON merge patches, which every API server (and KMock) applies the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import kopf

__all__ = ["ApiError", "KubeClient", "ObjectRef"]

log = logging.getLogger("cdb_operator.kube")

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class ApiError(Exception):
    """The API server refused a request (with its status code and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status in (408, 409, 429) or self.status >= 500


@dataclass(frozen=True)
class ObjectRef:
    """Where an object lives in the API: ``/api/v1`` or ``/apis/<group>/<version>``."""

    api_version: str
    plural: str
    namespace: str
    name: str

    def collection(self) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/namespaces/{self.namespace}/{self.plural}"

    def path(self) -> str:
        return f"{self.collection()}/{self.name}"


class KubeClient:
    """GET/LIST/POST/PATCH/DELETE on namespaced objects; errors become :class:`ApiError`."""

    def __init__(self, connect: Callable[[], kopf.ConnectionInfo], timeout: float = 15.0) -> None:
        self._connect = connect
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _open(self) -> httpx.AsyncClient:
        info = self._connect()
        verify: Any = True
        if info.server.startswith("https"):
            verify = False if info.insecure else info.as_ssl_context()
        return httpx.AsyncClient(
            base_url=info.server,
            headers={**info.as_http_headers(), "User-Agent": "cdb-operator"},
            verify=verify,
            timeout=self._timeout,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _request(
        self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        for attempt in (1, 2):
            if self._client is None:
                self._client = self._open()
            try:
                reply = await self._client.request(method, path, json=json, headers=headers)
            except httpx.HTTPError as error:
                raise ApiError(503, f"{method} {path}: {type(error).__name__}: {error}") from error
            if reply.status_code == 401 and attempt == 1:
                log.info("API answered 401, logging in again")
                await self.close()
                continue
            return reply
        raise AssertionError("unreachable")

    @staticmethod
    def _check(reply: httpx.Response) -> dict[str, Any]:
        if reply.status_code >= 400:
            try:
                message = str(reply.json().get("message", ""))[:300]
            except ValueError:
                message = reply.text[:300]
            raise ApiError(reply.status_code, message)
        body: dict[str, Any] = reply.json()
        return body

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        reply = await self._request("GET", ref.path())
        if reply.status_code == 404:
            return None
        return self._check(reply)

    async def list(self, ref: ObjectRef) -> list[dict[str, Any]]:
        """The objects of ``ref``'s kind in ``ref``'s namespace (``ref.name`` is ignored)."""
        items = self._check(await self._request("GET", ref.collection())).get("items")
        return [dict(item) for item in items or [] if isinstance(item, dict)]

    async def create(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(await self._request("POST", ref.collection(), json=body))

    async def patch(
        self, ref: ObjectRef, patch: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        path = ref.path() + (f"/{subresource}" if subresource else "")
        return self._check(await self._request("PATCH", path, json=patch, headers=MERGE_PATCH))

    async def delete(self, ref: ObjectRef) -> bool:
        """True if something was deleted, False if it was already gone."""
        reply = await self._request("DELETE", ref.path())
        if reply.status_code == 404:
            return False
        self._check(reply)
        return True
