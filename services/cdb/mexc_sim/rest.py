"""REST under ``/api/v1/contract``: MEXC's envelope, field names, column layouts and limits.

Errors come with HTTP 200 and ``{"success": false, "code", "message"}`` as MEXC sends them:
510 throttled, 1001 unknown contract, 600 bad parameter.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cdb.mexc_sim.market import INTERVAL_MINUTES, aggregate
from cdb.mexc_sim.simulator import STEP_BUDGET_S, Simulator

__all__ = ["MAX_KLINE_BARS", "rest_router"]

MAX_KLINE_BARS = 2000
MAX_DEALS = 100


def ok(data: Any) -> JSONResponse:
    return JSONResponse({"success": True, "code": 0, "data": data})


def failure(code: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "code": code, "message": message})


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"Parameter error: {name} must be an integer") from None


def rest_router(sim: Simulator) -> APIRouter:
    router = APIRouter(prefix="/api/v1/contract")

    async def guard(request: Request, family: str) -> JSONResponse | None:
        """Delay and throttle faults, then MEXC's per-family limit (per client address)."""
        sim.stats["rest_requests"] += 1
        if sim.faults.rest_delay_ms:
            await asyncio.sleep(sim.faults.rest_delay_ms / 1000)
        client = request.client.host if request.client else "?"
        limit = int(getattr(sim.config.limits, family))
        if sim.faults.rest_throttle_all or not sim.limiter.allow(
            (client, family), limit, time.monotonic()
        ):
            sim.stats["rest_throttled"] += 1
            return failure(510, "Requests are too frequent, please try again later")
        return None

    def contract_symbol(raw: str) -> str | None:
        symbol = raw.upper()  # the wire: REST accepted lowercase btc_usdt
        return symbol if symbol in sim.market.states else None

    @router.get("/ping")
    async def ping(request: Request) -> JSONResponse:
        return await guard(request, "ping") or ok(sim.market.now_ms)

    @router.get("/detail")
    async def detail(request: Request) -> JSONResponse:
        if refused := await guard(request, "detail"):
            return refused
        raw = request.query_params.get("symbol")
        closed = set(sim.faults.api_closed)
        if raw is None:
            return ok([c.detail(c.symbol not in closed) for c in sim.market.contracts])
        symbol = contract_symbol(raw)
        if symbol is None:
            return failure(1001, "Contract does not exist")
        return ok(sim.market.states[symbol].contract.detail(symbol not in closed))

    @router.get("/ticker")
    async def ticker(request: Request) -> JSONResponse:
        if refused := await guard(request, "ticker"):
            return refused
        sim.market.advance_to(sim.now_ms(), budget_s=STEP_BUDGET_S)
        raw = request.query_params.get("symbol")
        if raw is None:
            return ok([sim.market.ticker(s) for s in sim.market.order])
        symbol = contract_symbol(raw)
        if symbol is None:
            return failure(1001, "Contract does not exist")
        return ok(sim.market.ticker(symbol))

    @router.get("/kline/{raw_symbol}")
    async def kline(request: Request, raw_symbol: str) -> JSONResponse:
        if refused := await guard(request, "kline"):
            return refused
        symbol = contract_symbol(raw_symbol)
        if symbol is None:
            return failure(1001, "Contract does not exist")
        interval = request.query_params.get("interval", "Min1")
        if interval not in INTERVAL_MINUTES:
            return failure(600, f"Parameter error: interval {interval} not supported")
        try:
            start = _int_param(request, "start")
            end = _int_param(request, "end")
        except ValueError as error:
            return failure(600, str(error))
        sim.market.advance_to(sim.now_ms(), budget_s=STEP_BUDGET_S)
        return ok(klines(sim, symbol, INTERVAL_MINUTES[interval], start, end))

    @router.get("/deals/{raw_symbol}")
    async def deals(request: Request, raw_symbol: str) -> JSONResponse:
        if refused := await guard(request, "deals"):
            return refused
        symbol = contract_symbol(raw_symbol)
        if symbol is None:
            return failure(1001, "Contract does not exist")
        try:
            limit = _int_param(request, "limit") or MAX_DEALS
        except ValueError as error:
            return failure(600, str(error))
        sim.market.advance_to(sim.now_ms(), budget_s=STEP_BUDGET_S)
        recent = list(sim.market.states[symbol].recent)[-min(limit, MAX_DEALS) :]
        rows = [{k: v for k, v in d.wire().items() if k not in ("i", "cts")} for d in recent]
        return ok(rows[::-1])

    return router


def klines(
    sim: Simulator, symbol: str, minutes: int, start: int | None, end: int | None
) -> dict[str, list[float]]:
    """MEXC's column layout; at most 2000 bars (the first 2000 from ``start`` when both ends)."""
    span = minutes * 60
    now_s = sim.market.current_bar(symbol).t
    if start is None and end is None:
        end = now_s
        start = end - (MAX_KLINE_BARS - 1) * span
    elif start is None:
        assert end is not None
        start = end - (MAX_KLINE_BARS - 1) * span
    elif end is None:
        end = now_s
    assert start is not None and end is not None
    first = start // span * span
    bars = sim.market.bars_between(symbol, first, min(end, now_s))
    rows = aggregate(bars, minutes)
    rows = rows[:MAX_KLINE_BARS]
    columns = ("time", "open", "close", "high", "low", "vol", "amount")
    real = ("realOpen", "realClose", "realHigh", "realLow")
    return {name: [row[name] for row in rows] for name in (*columns, *real)}
