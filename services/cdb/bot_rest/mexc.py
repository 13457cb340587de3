"""A paced MEXC REST client: MEXC's envelope checked, errors turned into exceptions."""

from __future__ import annotations

from typing import Any

import httpx

from cdb.core.pacing import RequestPacer

__all__ = ["MexcRest", "UpstreamError", "UpstreamTimeout"]


class UpstreamError(Exception):
    """MEXC answered an error (``code``/``message`` as MEXC sent them) or nothing usable."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"MEXC code {code}: {message}")
        self.code = code
        self.message = message


class UpstreamTimeout(Exception):
    """MEXC did not answer in time."""


class MexcRest:
    def __init__(self, base_url: str, timeout_s: float, pacers: dict[str, RequestPacer]) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.AsyncClient(timeout=timeout_s)
        self.pacers = pacers

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, family: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """``data`` of a successful MEXC reply; raises :class:`UpstreamError`/``Timeout``."""
        try:
            async with self.pacers[family].request():
                reply = await self.client.get(f"{self.base_url}{path}", params=params)
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"MEXC did not answer {path} in time") from None
        except httpx.TransportError as error:
            raise UpstreamError(None, f"MEXC unreachable: {type(error).__name__}") from None
        try:
            body = reply.json()
        except ValueError:
            raise UpstreamError(None, f"HTTP {reply.status_code}, body is not JSON") from None
        if not isinstance(body, dict):
            raise UpstreamError(None, f"HTTP {reply.status_code}, unexpected body")
        # MEXC reports errors with HTTP 200: always check success and code.
        if reply.status_code != 200 or body.get("success") is False or body.get("code", 0) != 0:
            code = body.get("code")
            raise UpstreamError(
                code if isinstance(code, int) else None,
                str(body.get("message") or body.get("msg") or f"HTTP {reply.status_code}"),
            )
        return body.get("data")
