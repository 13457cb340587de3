"""The one client of bot_rest's HTTP API, typed by :mod:`cdb.core.rest`.

Every answer is validated against its model: a 200 whose body does not match is
:class:`BotRestMalformed` naming the endpoint and the fields, an error answer is
:class:`BotRestRefused` with bot_rest's ``error``, ``code`` and ``message``, and no
answer is :class:`BotRestUnavailable`. All three are :class:`BotRestError`, so a caller
that only needs "it did not work" catches one type.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from cdb.core.rest import ErrorOut, KlinesOut, TickersOut, UniverseOut

__all__ = [
    "BotRestClient",
    "BotRestError",
    "BotRestMalformed",
    "BotRestRefused",
    "BotRestUnavailable",
]

M = TypeVar("M", bound=BaseModel)


class BotRestError(Exception):
    """bot_rest gave no usable answer."""


class BotRestUnavailable(BotRestError):
    """bot_rest did not answer (unreachable, timed out)."""


class BotRestRefused(BotRestError):
    """bot_rest answered with an error status."""

    def __init__(self, url: str, status: int, body: ErrorOut | None, text: str) -> None:
        self.status = status
        self.body = body
        detail = f"{body.error}: {body.message}" if body is not None else text[:200]
        if body is not None and body.code is not None:
            detail += f" (MEXC code {body.code})"
        super().__init__(f"bot_rest answered HTTP {status} for {url}: {detail}")


class BotRestMalformed(BotRestError):
    """bot_rest answered 200 with a body that is not the contract's."""


def _summary(error: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}" for e in error.errors()
    ]
    more = f" (+{len(parts) - 3} more)" if len(parts) > 3 else ""
    return "; ".join(parts[:3]) + more


class BotRestClient:
    """``async with BotRestClient(url) as rest: await rest.universe()``."""

    def __init__(
        self, base_url: str, timeout_s: float = 10.0, client: httpx.AsyncClient | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owned = client is None
        self.client = client or httpx.AsyncClient(timeout=timeout_s)

    async def __aenter__(self) -> BotRestClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owned:
            await self.client.aclose()

    async def universe(self) -> UniverseOut:
        return await self._get("/universe", UniverseOut)

    async def tickers(self, symbol: str | None = None) -> TickersOut:
        params = {"symbol": symbol} if symbol is not None else {}
        return await self._get("/tickers", TickersOut, params)

    async def klines(self, symbol: str, start: int, end: int | None = None) -> KlinesOut:
        """Min1 bars opening in ``[start, end]`` (``end`` omitted: up to now)."""
        params: dict[str, Any] = {"start": start}
        if end is not None:
            params["end"] = end
        return await self._get(f"/klines/{symbol}", KlinesOut, params)

    async def _get(self, path: str, model: type[M], params: dict[str, Any] | None = None) -> M:
        url = f"{self.base_url}{path}"
        try:
            reply = await self.client.get(url, params=params)
        except httpx.HTTPError as error:
            raise BotRestUnavailable(
                f"bot_rest unreachable at {url}: {type(error).__name__}: {error}"
            ) from error
        if reply.status_code != 200:
            try:
                body: ErrorOut | None = ErrorOut.model_validate_json(reply.content)
            except ValidationError:
                body = None
            raise BotRestRefused(url, reply.status_code, body, reply.text)
        try:
            return model.model_validate_json(reply.content)
        except ValidationError as error:
            raise BotRestMalformed(
                f"bot_rest sent a malformed {model.__name__} for {url}: {_summary(error)}"
            ) from error
