"""Warm a symbol's window from bot_rest's klines, so a fresh install predicts at once.

The features look back ``WARMUP_BARS`` (120) one-minute bars. Without history a new
symbol waits two live hours; with ``BOT_REST_URL`` set, the first candle of a symbol whose
window is not full fetches the missing minutes (MEXC's Min1 klines through bot_rest, read
with the kernel's typed client) once. Warm-up is best effort: when bot_rest does not
answer, the window fills live.
"""

from __future__ import annotations

import logging

from cdb.core.events import Candle, deterministic_id
from cdb.core.rest import KlineBar
from cdb.core.rest_client import BotRestClient, BotRestError

__all__ = ["KlineWarmup"]

log = logging.getLogger("cdb.ml_advisor.warmup")

BAR_SECONDS = 60


class KlineWarmup:
    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.rest = BotRestClient(base_url, timeout_s)
        self.attempted: set[str] = set()

    async def close(self) -> None:
        await self.rest.close()

    def wants(self, symbol: str) -> bool:
        return symbol not in self.attempted

    async def history(self, symbol: str, first: int, before: int) -> list[Candle]:
        """Closed bars opened in [first, before), oldest first; [] when unavailable."""
        self.attempted.add(symbol)
        if before <= first:
            return []
        try:
            bars = (await self.rest.klines(symbol, first, before - BAR_SECONDS)).bars
        except BotRestError as error:
            log.warning(
                "warm-up from bot_rest failed; the window fills live",
                extra={"symbol": symbol, "error": str(error)[:300]},
            )
            return []
        candles = []
        for bar in bars:
            if not first <= bar.time < before:
                continue
            candle = _candle(symbol, bar)
            if candle is not None:
                candles.append(candle)
        return candles


def _candle(symbol: str, bar: KlineBar) -> Candle | None:
    """The bar as a candle (MEXC's ``real*`` prices are the bar's own), or None if odd."""
    open_ = bar.realOpen if bar.realOpen is not None else bar.open
    high = max(bar.realHigh if bar.realHigh is not None else bar.high, open_)
    low = min(bar.realLow if bar.realLow is not None else bar.low, open_)
    close = bar.realClose if bar.realClose is not None else bar.close
    if min(open_, high, low, close) <= 0 or not low <= close <= high:
        return None
    return Candle(
        event_id=deterministic_id("candle", symbol, bar.time),
        symbol=symbol,
        open_time=bar.time,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=bar.vol,
        turnover=bar.amount,
    )
