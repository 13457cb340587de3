"""MEXC contract private API, signed as MEXC documents it.

Headers ``ApiKey``, ``Request-Time`` (ms), ``Signature`` = hex HMAC-SHA256(secret,
accessKey + Request-Time + parameter string), ``Recv-Window``; the parameter string is the
JSON body for POST and the sorted ``k=v&…`` query for GET (path parameters are not
signed). Errors come as HTTP 200 with ``{"success": false, "code": …, "message": …}``.
The keys are held as ``SecretStr`` and never appear in a log line or an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from cdb.core.bus import TransientError

__all__ = ["MexcError", "MexcPrivateClient", "sign"]

ORDER_NOT_FOUND_CODES = frozenset({2040})


class MexcError(Exception):
    """MEXC answered ``success: false``: the request was understood and refused."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"MEXC refused (code {code}): {message}")
        self.code = code
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.code in ORDER_NOT_FOUND_CODES


def sign(secret: str, access_key: str, request_time: str, parameters: str) -> str:
    message = f"{access_key}{request_time}{parameters}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def query_string(params: dict[str, Any]) -> str:
    """GET parameters in dictionary order, ``None`` left out, values URL-encoded."""
    return "&".join(
        f"{k}={quote(str(v), safe='')}" for k, v in sorted(params.items()) if v is not None
    )


class MexcPrivateClient:
    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        api_secret: SecretStr,
        *,
        recv_window_s: int = 10,
        timeout_s: float = 10.0,
    ) -> None:
        self._key = api_key
        self._secret = api_secret
        self.recv_window_s = recv_window_s
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)

    async def close(self) -> None:
        await self.http.aclose()

    def _headers(self, parameters: str) -> dict[str, str]:
        now = str(int(time.time() * 1000))
        key = self._key.get_secret_value()
        return {
            "ApiKey": key,
            "Request-Time": now,
            "Signature": sign(self._secret.get_secret_value(), key, now, parameters),
            "Recv-Window": str(self.recv_window_s),
            "Content-Type": "application/json",
        }

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        signed: bool = True,
    ) -> Any:
        query = query_string(params or {})
        try:
            if method == "POST":
                content = json.dumps(body, separators=(",", ":"))
                headers = self._headers(content) if signed else {}
                reply = await self.http.post(path, content=content, headers=headers)
            else:
                headers = self._headers(query) if signed else {}
                reply = await self.http.get(f"{path}?{query}" if query else path, headers=headers)
        except httpx.TransportError as error:
            raise TransientError(f"MEXC unreachable: {type(error).__name__}") from None
        if reply.status_code >= 500 or reply.status_code == 429:
            raise TransientError(f"MEXC answered HTTP {reply.status_code}")
        try:
            envelope = reply.json()
        except ValueError:
            raise MexcError(-reply.status_code, f"HTTP {reply.status_code}, not JSON") from None
        if not isinstance(envelope, dict):
            raise MexcError(-1, "unexpected reply shape")
        if not envelope.get("success", False) or envelope.get("code", 0) != 0:
            code = int(envelope.get("code", -1))
            if code in (510, 501):  # too frequent / busy: try again later
                raise TransientError(f"MEXC busy (code {code})")
            raise MexcError(code, str(envelope.get("message", ""))[:200])
        return envelope.get("data")

    async def contract_detail(self, symbol: str) -> dict[str, Any]:
        data = await self._call(
            "GET", f"/api/v1/contract/detail?symbol={quote(symbol)}", signed=False
        )
        if not isinstance(data, dict):
            raise MexcError(1001, f"no contract detail for {symbol}")
        return data

    async def submit_order(self, body: dict[str, Any]) -> str:
        """``POST /api/v1/private/order/submit``; returns MEXC's order id."""
        return str(await self._call("POST", "/api/v1/private/order/submit", body=body))

    async def order_by_external_id(self, symbol: str, external_oid: str) -> dict[str, Any]:
        data = await self._call(
            "GET",
            f"/api/v1/private/order/external/{quote(symbol)}/{quote(external_oid, safe='')}",
        )
        if not isinstance(data, dict):
            raise MexcError(2040, "order not exist")
        return data

    async def open_positions(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/v1/private/position/open_positions`` (every contract, or one)."""
        data = await self._call(
            "GET", "/api/v1/private/position/open_positions", params={"symbol": symbol}
        )
        if not isinstance(data, list):
            raise MexcError(-1, "open_positions: data is not a list")
        return [row for row in data if isinstance(row, dict)]

    async def history_positions(self, symbol: str, position_type: int) -> list[dict[str, Any]]:
        """``GET /api/v1/private/position/list/history_positions``, the newest 100 closed
        positions of one contract and side (``data`` a list, or paginated ``resultList``)."""
        params = {"symbol": symbol, "type": position_type, "page_num": 1, "page_size": 100}
        data = await self._call(
            "GET", "/api/v1/private/position/list/history_positions", params=params
        )
        if isinstance(data, dict):
            data = data.get("resultList")
        if not isinstance(data, list):
            raise MexcError(-1, "history_positions: data is not a list")
        return [row for row in data if isinstance(row, dict)]

    async def cancel_orders(self, order_ids: list[str]) -> list[dict[str, Any]]:
        data = await self._call("POST", "/api/v1/private/order/cancel", body=order_ids)
        return list(data or [])
