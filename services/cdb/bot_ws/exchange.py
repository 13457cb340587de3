"""REST reads bot_ws needs: the contract universe and Min1 klines for backfill.

From bot_rest when ``BOT_REST_URL`` is set, else straight from MEXC (``MEXC_REST_URL``),
always under MEXC's request limit (a shared sliding window per process).
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from cdb.bot_ws.candles import ClosedCandle
from cdb.bot_ws.settings import BotWsSettings
from cdb.core.pacing import RequestPacer

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


def _num(row: dict[str, Any], real: str, plain: str) -> float:
    value = row.get(real)
    return float(value if value is not None else row[plain])


def candles_from_rows(symbol: str, rows: list[dict[str, Any]]) -> list[ClosedCandle]:
    """MEXC kline rows → candles from the bar's own trades (``real*``, else the plain OHLC)."""
    return [
        ClosedCandle(
            symbol=symbol,
            open_time=int(row["time"]),
            open=_num(row, "realOpen", "open"),
            high=_num(row, "realHigh", "high"),
            low=_num(row, "realLow", "low"),
            close=_num(row, "realClose", "close"),
            volume=float(row.get("vol", 0.0)),
            turnover=float(row.get("amount", 0.0)),
            source="rest",
        )
        for row in rows
    ]


def rows_from_columns(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """MEXC's column layout (``time[]``, ``open[]``, …) → one dict per bar."""
    times = columns.get("time") or []
    return [{name: values[i] for name, values in columns.items()} for i in range(len(times))]


class ExchangeRest:
    def __init__(self, settings: BotWsSettings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(timeout=settings.rest_timeout_s)
        # a 10 % margin on the window: arrival jitter must not push us over MEXC's count
        self.pacer = RequestPacer(settings.rest_rate_per_2s, window_s=2.2)

    async def close(self) -> None:
        await self.client.aclose()

    async def universe(self) -> list[ContractInfo]:
        """USDT perpetuals open for API trading, sorted by symbol."""
        if self.settings.bot_rest_url:
            reply = await self.client.get(f"{self.settings.bot_rest_url}/universe")
            if reply.status_code != 200:
                raise ExchangeError(f"bot_rest /universe: HTTP {reply.status_code}")
            rows = reply.json()["symbols"]
            return sorted(
                (ContractInfo.model_validate(row) for row in rows), key=lambda c: c.symbol
            )
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
        if self.settings.bot_rest_url:
            reply = await self.client.get(
                f"{self.settings.bot_rest_url}/klines/{symbol}",
                params={"start": start_s, "end": end_s},
            )
            if reply.status_code != 200:
                raise ExchangeError(
                    f"bot_rest /klines: HTTP {reply.status_code} {reply.text[:200]}"
                )
            rows = reply.json()["bars"]
        else:
            async with self.pacer.request():
                reply = await self.client.get(
                    f"{self.settings.mexc_rest_url}/api/v1/contract/kline/{symbol}",
                    params={"interval": "Min1", "start": start_s, "end": end_s},
                )
            rows = rows_from_columns(_mexc_data(reply))
        return [c for c in candles_from_rows(symbol, rows) if start_s <= c.open_time <= end_s]
