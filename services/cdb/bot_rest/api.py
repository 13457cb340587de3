"""The HTTP API other services use: ``/universe``, ``/tickers``, ``/klines/{symbol}``.

The answers are the kernel's models (:mod:`cdb.core.rest`, ``schemas/bot_rest.*.json``)
and every route declares them, so the OpenAPI document, the schemas and the one client
(:mod:`cdb.core.rest_client`) cannot drift apart.

An error from MEXC becomes HTTP 502 with MEXC's ``code`` and ``message``; no answer in
time becomes HTTP 504. Bad parameters are HTTP 400 and never reach MEXC.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter
from pydantic import BaseModel

from cdb.bot_rest.cache import TtlCache
from cdb.bot_rest.mexc import MexcRest, UpstreamError, UpstreamTimeout
from cdb.bot_rest.settings import BotRestSettings
from cdb.core.http import APIRouter, JSONResponse, Query
from cdb.core.rest import (
    ContractOut,
    ErrorOut,
    KlineBar,
    KlinesOut,
    TickerOut,
    TickersOut,
    UniverseOut,
)

__all__ = ["ApiMetrics", "BotRestApi"]

MEXC_PAGE_BARS = 2000
SYMBOL = re.compile(r"^[A-Z0-9]+_[A-Z0-9]+$")
M = TypeVar("M", bound=BaseModel)


class ApiMetrics:
    def __init__(self, registry: Any) -> None:
        self.requests = Counter(
            "bot_rest_requests_total", "API requests", ["endpoint", "outcome"], registry=registry
        )
        self.cache_hits = Counter(
            "bot_rest_cache_hits_total",
            "Answers served from cache",
            ["endpoint"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "bot_rest_upstream_errors_total",
            "Errors MEXC answered (code; timeout; unreachable)",
            ["code"],
            registry=registry,
        )


# The error answers every route may give (their body is :class:`ErrorOut`).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "bad parameters (never sent to MEXC)"},
    404: {"model": ErrorOut, "description": "unknown symbol"},
    502: {"model": ErrorOut, "description": "MEXC answered an error (its code and message)"},
    504: {"model": ErrorOut, "description": "MEXC did not answer in time"},
}


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(ErrorOut.model_validate(body).model_dump(), status_code=status)


class BotRestApi:
    def __init__(self, settings: BotRestSettings, mexc: MexcRest, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.mexc = mexc
        self.metrics = metrics
        self.universe_cache: TtlCache[UniverseOut] = TtlCache()
        self.tickers_cache: TtlCache[TickersOut] = TtlCache()
        self.klines_cache: TtlCache[KlinesOut] = TtlCache()

    async def _answer(
        self,
        endpoint: str,
        cache: TtlCache[M],
        key: str,
        ttl: float,
        fetch: Callable[[], Awaitable[M]],
    ) -> M | JSONResponse:
        try:
            value, hit = await cache.get(key, ttl, fetch)
        except UpstreamTimeout as error:
            self.metrics.upstream_errors.labels(code="timeout").inc()
            self.metrics.requests.labels(endpoint=endpoint, outcome="timeout").inc()
            return _error(504, {"error": "mexc_timeout", "message": str(error)})
        except UpstreamError as error:
            self.metrics.upstream_errors.labels(code=str(error.code or "unreachable")).inc()
            self.metrics.requests.labels(endpoint=endpoint, outcome="upstream_error").inc()
            return _error(
                502, {"error": "mexc_error", "code": error.code, "message": error.message}
            )
        except (KeyError, TypeError, ValueError) as error:
            self.metrics.upstream_errors.labels(code="bad_payload").inc()
            self.metrics.requests.labels(endpoint=endpoint, outcome="upstream_error").inc()
            return _error(
                502,
                {"error": "mexc_error", "code": None, "message": f"unexpected payload: {error}"},
            )
        if hit:
            self.metrics.cache_hits.labels(endpoint=endpoint).inc()
        self.metrics.requests.labels(endpoint=endpoint, outcome="ok").inc()
        return value

    # ----- fetchers ---------------------------------------------------------------------

    async def fetch_universe(self) -> UniverseOut:
        rows = await self.mexc.get("detail", "/api/v1/contract/detail")
        contracts = [
            ContractOut(
                symbol=row["symbol"],
                base_coin=row["baseCoin"],
                contract_size=row["contractSize"],
                price_scale=row["priceScale"],
                price_unit=row["priceUnit"],
                vol_scale=row["volScale"],
                vol_unit=row["volUnit"],
                min_vol=row["minVol"],
                max_vol=row["maxVol"],
                max_leverage=row["maxLeverage"],
                taker_fee_rate=row["takerFeeRate"],
                maker_fee_rate=row["makerFeeRate"],
            )
            for row in rows
            if row.get("quoteCoin") == "USDT"
            and row.get("settleCoin") == "USDT"
            and row.get("futureType") == 1
            and row.get("state") == 0
            and row.get("apiAllowed") is True
        ]
        contracts.sort(key=lambda c: c.symbol)
        return UniverseOut(count=len(contracts), symbols=contracts)

    async def fetch_tickers(self) -> TickersOut:
        rows = await self.mexc.get("ticker", "/api/v1/contract/ticker")
        tickers = [
            TickerOut(
                symbol=row["symbol"],
                last_price=row["lastPrice"],
                volume24=row["volume24"],
                amount24=row["amount24"],
                rise_fall_rate=row["riseFallRate"],
                high24_price=row["high24Price"],
                lower24_price=row["lower24Price"],
                fair_price=row["fairPrice"],
                funding_rate=row.get("fundingRate"),
                timestamp=row["timestamp"],
            )
            for row in rows
            if str(row.get("symbol", "")).endswith("_USDT")
        ]
        return TickersOut(count=len(tickers), tickers=tickers)

    async def fetch_klines(self, symbol: str, start: int, end: int | None) -> KlinesOut:
        """Min1 bars from ``start`` to ``end`` (now when omitted), in pages of 2000."""
        bars: list[KlineBar] = []
        cursor = start // 60 * 60
        while end is None or cursor <= end:
            page_end = cursor + (MEXC_PAGE_BARS - 1) * 60
            if end is not None:
                page_end = min(page_end, end)
            columns = await self.mexc.get(
                "kline",
                f"/api/v1/contract/kline/{symbol}",
                {"interval": "Min1", "start": cursor, "end": page_end},
            )
            times = columns.get("time") or []
            page = [
                KlineBar(**{name: values[i] for name, values in columns.items()})
                for i in range(len(times))
            ]
            bars.extend(b for b in page if b.time >= cursor and (end is None or b.time <= end))
            if len(bars) > self.settings.max_kline_bars:
                raise ValueError(f"more than {self.settings.max_kline_bars} bars")
            if len(page) < MEXC_PAGE_BARS and (end is None or page_end >= end):
                break
            if not page:
                break
            cursor = page[-1].time + 60
        return KlinesOut(
            symbol=symbol,
            interval="Min1",
            start=start,
            end=end if end is not None else (bars[-1].time if bars else start),
            bars=bars,
        )

    # ----- routes -----------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter()
        settings = self.settings

        @router.get("/universe", response_model=UniverseOut, responses=ERRORS)
        async def universe() -> UniverseOut | JSONResponse:
            return await self._answer(
                "universe", self.universe_cache, "all", settings.universe_ttl_s, self.fetch_universe
            )

        @router.get("/tickers", response_model=TickersOut, responses=ERRORS)
        async def tickers(symbol: str | None = None) -> TickersOut | JSONResponse:
            answer = await self._answer(
                "tickers", self.tickers_cache, "all", settings.tickers_ttl_s, self.fetch_tickers
            )
            if symbol is None or isinstance(answer, JSONResponse):
                return answer
            wanted = symbol.upper()
            rows = [t for t in answer.tickers if t.symbol == wanted]
            if not rows:
                return _error(
                    404, {"error": "unknown_symbol", "message": f"no ticker for {wanted}"}
                )
            return TickersOut(count=1, tickers=rows)

        @router.get("/klines/{symbol}", response_model=KlinesOut, responses=ERRORS)
        async def klines(
            symbol: str,
            start: int = Query(ge=0, description="unix seconds"),
            end: int | None = Query(default=None, ge=0, description="unix seconds"),
        ) -> KlinesOut | JSONResponse:
            wanted = symbol.upper()
            if not SYMBOL.match(wanted):
                self.metrics.requests.labels(endpoint="klines", outcome="bad_request").inc()
                return _error(400, {"error": "bad_request", "message": f"bad symbol {symbol!r}"})
            if end is not None and end < start:
                self.metrics.requests.labels(endpoint="klines", outcome="bad_request").inc()
                return _error(400, {"error": "bad_request", "message": "end is before start"})
            if end is not None and (end - start) // 60 + 1 > settings.max_kline_bars:
                self.metrics.requests.labels(endpoint="klines", outcome="bad_request").inc()
                return _error(
                    400,
                    {
                        "error": "bad_request",
                        "message": f"at most {settings.max_kline_bars} bars per request",
                    },
                )
            return await self._answer(
                "klines",
                self.klines_cache,
                f"{wanted}:{start}:{end}",
                settings.klines_ttl_s if end is not None else 0.0,
                lambda: self.fetch_klines(wanted, start, end),
            )

        return router
