"""REST reads bot_ws needs: the contract universe and Min1 klines for backfill.

From bot_rest when ``BOT_REST_URL`` is set (through the kernel's typed client,
:mod:`cdb.core.rest_client`), else straight from MEXC (``MEXC_REST_URL``), always under
MEXC's request limit (a shared sliding window per process). Either way a bar is the
contract's :class:`~cdb.core.rest.KlineBar`.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from cdb.bot_ws.candles import ClosedCandle
from cdb.bot_ws.settings import BotWsSettings
from cdb.core.pacing import RequestPacer
from cdb.core.rest import KlineBar
from cdb.core.rest_client import BotRestClient, BotRestError

__all__ = ["ContractInfo", "ExchangeError", "ExchangeRest"]


class ExchangeError(Exception):
    """MEXC or bot_rest answered an error (or nothing usable)."""


class ContractInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    symbol: str
    contract_size: float = Field(gt=0)


def _mexc_data(reply: httpx.Response) -> Any:
    try:
        body = reply.json()
    except ValueError:
        raise ExchangeError(f"HTTP {reply.status_code}: not JSON") from None
    if reply.status_code != 200 or not isinstance(body, dict):
        raise ExchangeError(f"HTTP {reply.status_code}: {str(body)[:200]}")
    if body.get("success") is False or body.get("code", 0) != 0:
        raise ExchangeError(f"MEXC code {body.get('code')}: {body.get('message')}")
    return body.get("data")


def _own(real: float | None, plain: float) -> float:
    return real if real is not None else plain


def candles_from_bars(symbol: str, bars: list[KlineBar]) -> list[ClosedCandle]:
    """Min1 bars → candles from the bar's own trades (``real*``, else the plain OHLC)."""
    return [
        ClosedCandle(
            symbol=symbol,
            open_time=bar.time,
            open=_own(bar.realOpen, bar.open),
            high=_own(bar.realHigh, bar.high),
            low=_own(bar.realLow, bar.low),
            close=_own(bar.realClose, bar.close),
            volume=bar.vol,
            turnover=bar.amount,
            source="rest",
        )
        for bar in bars
    ]


def bars_from_columns(columns: dict[str, list[Any]]) -> list[KlineBar]:
    """MEXC's column layout (``time[]``, ``open[]``, …) → one bar each."""
    times = columns.get("time") or []
    return [
        KlineBar.model_validate({name: values[i] for name, values in columns.items()})
        for i in range(len(times))
    ]


class ExchangeRest:
    def __init__(self, settings: BotWsSettings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(timeout=settings.rest_timeout_s)
        self.bot_rest = (
            BotRestClient(settings.bot_rest_url, client=self.client)
            if settings.bot_rest_url
            else None
        )
        # a 10 % margin on the window: arrival jitter must not push us over MEXC's count
        self.pacer = RequestPacer(settings.rest_rate_per_2s, window_s=2.2)

    async def close(self) -> None:
        await self.client.aclose()

    async def universe(self) -> list[ContractInfo]:
        """USDT perpetuals open for API trading, sorted by symbol."""
        if self.bot_rest is not None:
            try:
                universe = await self.bot_rest.universe()
            except BotRestError as error:
                raise ExchangeError(str(error)) from error
            return sorted(
                (ContractInfo(symbol=c.symbol, contract_size=c.contract_size)
                 for c in universe.symbols),
                key=lambda c: c.symbol,
            )  # fmt: skip
        async with self.pacer.request():
            reply = await self.client.get(f"{self.settings.mexc_rest_url}/api/v1/contract/detail")
        rows = _mexc_data(reply)
        contracts = [
            ContractInfo(symbol=row["symbol"], contract_size=row["contractSize"])
            for row in rows
            if row.get("quoteCoin") == "USDT"
            and row.get("futureType") == 1
            and row.get("state") == 0
            and row.get("apiAllowed")
        ]
        return sorted(contracts, key=lambda c: c.symbol)

    async def klines(self, symbol: str, start_s: int, end_s: int) -> list[ClosedCandle]:
        """Min1 bars opening in ``[start_s, end_s]``."""
        if self.bot_rest is not None:
            try:
                bars = (await self.bot_rest.klines(symbol, start_s, end_s)).bars
            except BotRestError as error:
                raise ExchangeError(str(error)) from error
        else:
            async with self.pacer.request():
                reply = await self.client.get(
                    f"{self.settings.mexc_rest_url}/api/v1/contract/kline/{symbol}",
                    params={"interval": "Min1", "start": start_s, "end": end_s},
                )
            bars = bars_from_columns(_mexc_data(reply))
        return [c for c in candles_from_bars(symbol, bars) if start_s <= c.open_time <= end_s]
