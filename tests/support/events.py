"""Bus events for tests: a market snapshot, a candle, and whether a group caught up."""

from __future__ import annotations

import time
from typing import Any

from cdb.core.events import Candle, MarketData

# The buses of processes under test: claim, block and poll quickly, never stale.
FAST_BUS = {
    "BUS_CLAIM_IDLE_MS": "1000",
    "BUS_BLOCK_MS": "200",
    "STALE_AFTER_S": "3600",
    "SHUTDOWN_GRACE_S": "5",
    "LIVE_POLL_INTERVAL_S": "1",
}


def market(
    symbol: str = "BTC_USDT",
    pct: float = 4.5,
    *,
    price: float = 100.0,
    ts: int | None = None,
    volume: float = 250_000.0,
    **extra: Any,
) -> MarketData:
    """A market snapshot of ``symbol`` moving ``pct`` per cent, stamped now unless ``ts``."""
    return MarketData(
        symbol=symbol,
        price=price,
        volume=volume,
        pct_change=pct,
        timestamp=int(time.time()) if ts is None else ts,
        **extra,
    )


def candle(
    symbol: str,
    *,
    low: float,
    high: float,
    open_: float,
    close: float,
    open_time: int | None = None,
) -> Candle:
    return Candle(
        symbol=symbol,
        open_time=int(time.time()) if open_time is None else open_time,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=1000.0,
        turnover=100_000.0,
    )


async def group_caught_up(redis: Any, stream: str, group: str) -> bool:
    """True once ``group`` has read and acknowledged everything on ``stream``."""
    for info in await redis.xinfo_groups(stream):
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == group:
            return bool(info["pending"] == 0 and info["lag"] == 0)
    return False
