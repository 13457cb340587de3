"""The ``candles`` table: every candle from ``cdb:candles`` kept for training and outcomes."""

from __future__ import annotations

from typing import Any

from cdb.core.db import Database
from cdb.core.events import Candle

__all__ = ["load_recent", "save_candle"]

UPSERT = """
INSERT INTO candles (symbol, interval, open_time, open, high, low, close, volume, turnover,
                     event_id)
VALUES (%(symbol)s, %(interval)s, to_timestamp(%(open_time)s), %(open)s, %(high)s, %(low)s,
        %(close)s, %(volume)s, %(turnover)s, %(event_id)s)
ON CONFLICT (symbol, interval, open_time) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, turnover = EXCLUDED.turnover, event_id = EXCLUDED.event_id,
    received_at = now()
"""

RECENT = """
SELECT symbol, extract(epoch FROM open_time)::bigint, open, high, low, close, volume, turnover
FROM (
    SELECT c.*, row_number() OVER (PARTITION BY symbol ORDER BY open_time DESC) AS newest
    FROM candles c
    WHERE interval = 'Min1'
      AND open_time >= (SELECT max(open_time) FROM candles) - make_interval(mins => %(span)s)
) recent
WHERE newest <= %(bars)s
ORDER BY symbol, open_time
"""


async def save_candle(db: Database, candle: Candle) -> None:
    """Upsert one bar; a re-published bar replaces its earlier version."""
    async with db.connection() as conn, conn.transaction():
        await conn.execute(UPSERT, candle.model_dump())


async def load_recent(db: Database, bars: int) -> list[Candle]:
    """The newest ``bars`` bars per symbol, oldest first (warm start after a restart)."""
    async with db.connection() as conn, conn.cursor() as cur:
        await cur.execute(RECENT, {"bars": bars, "span": bars * 2})
        rows: list[tuple[Any, ...]] = await cur.fetchall()
    return [
        Candle(
            event_id=f"warm-{symbol}-{open_time}",
            symbol=symbol,
            open_time=int(open_time),
            open=float(o),
            high=float(h),
            low=float(lo),
            close=float(c),
            volume=float(v),
            turnover=float(t),
        )
        for symbol, open_time, o, h, lo, c, v, t in rows
    ]
