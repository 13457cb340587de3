"""The lookback window per symbol and the top-N gainers/losers across symbols. Pure.

The window ending in minute ``m`` (the exchange clock's current minute) covers the
``lookback`` minutes ``m - lookback + 1 … m``: the closed candles in it plus the bar of
the running minute. ``pct_change`` = (last price - open of the earliest minute in the
window) / that open * 100, with MEXC's own-trade open (``realOpen``); ``volume`` is the
window's quote turnover (USDT), which is what the seed's ``SIGNAL_MIN_VOLUME`` means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cdb.bot_ws.candles import ClosedCandle, OpenBar
from cdb.core.events import MarketData, deterministic_id

__all__ = ["WindowStat", "market_data_of", "top_movers", "window_stat"]


@dataclass(frozen=True, slots=True)
class WindowStat:
    symbol: str
    price: float
    pct_change: float
    volume: float


def window_stat(
    symbol: str,
    closed: Iterable[ClosedCandle],
    open_bars: Mapping[int, OpenBar],
    last_price: float | None,
    end_minute: int,
    lookback: int,
) -> WindowStat | None:
    """The window's figures, or ``None`` when nothing of the symbol is in the window."""
    start = end_minute - (lookback - 1) * 60
    first_time: int | None = None
    first_open = 0.0
    newest_time = -1
    newest_close = 0.0
    volume = 0.0
    for candle in closed:
        if start <= candle.open_time <= end_minute:
            volume += candle.turnover
            if first_time is None or candle.open_time < first_time:
                first_time, first_open = candle.open_time, candle.open
            if candle.open_time > newest_time:
                newest_time, newest_close = candle.open_time, candle.close
    for minute, bar in open_bars.items():
        if start <= minute <= end_minute:
            volume += bar.turnover
            if first_time is None or minute < first_time:
                first_time, first_open = minute, bar.open
            if minute > newest_time:
                newest_time, newest_close = minute, bar.close
    if first_time is None or first_open <= 0:
        return None
    price = last_price if last_price is not None else newest_close
    return WindowStat(symbol, price, (price - first_open) / first_open * 100.0, volume)


def top_movers(
    stats: Iterable[WindowStat], n: int = 5
) -> tuple[list[WindowStat], list[WindowStat]]:
    """The ``n`` biggest gainers (pct_change > 0, highest first) and losers (< 0, lowest first).

    Ties go to the alphabetically first symbol, so the result is deterministic.
    """
    items = list(stats)
    gainers = sorted(
        (s for s in items if s.pct_change > 0), key=lambda s: (-s.pct_change, s.symbol)
    )
    losers = sorted((s for s in items if s.pct_change < 0), key=lambda s: (s.pct_change, s.symbol))
    return gainers[:n], losers[:n]


def market_data_of(stat: WindowStat, timestamp: int, interval: str) -> MarketData:
    """The ``market_data`` event of a mover (seed shape; the id depends only on its inputs,
    so a window published again is the same event)."""
    return MarketData(
        event_id=deterministic_id("market_data", stat.symbol, timestamp, interval),
        symbol=stat.symbol,
        price=stat.price,
        volume=round(stat.volume, 2),
        pct_change=round(stat.pct_change, 4),
        timestamp=timestamp,
        interval=interval,
    )
