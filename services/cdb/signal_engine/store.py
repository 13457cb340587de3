"""signal_engine's PostgreSQL side: the cooldown state read and the signal written together."""

from __future__ import annotations

from typing import Any

from cdb.core.db import AsyncConnection
from cdb.core.events import MarketData, Signal
from cdb.signal_engine.strategy import CooldownState, LastSignal, signal_id_for

__all__ = ["insert_signal", "load_cooldown", "lock_symbol", "own_signal"]


async def lock_symbol(conn: AsyncConnection[Any], symbol: str) -> None:
    """Serialise decisions per symbol across replicas until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"signal:{symbol}",))


async def own_signal(conn: AsyncConnection[Any], md: MarketData, strategy: str) -> Signal | None:
    """The signal this window already made (a redelivery), exactly as it was stored."""
    own = [signal_id_for(md, side, strategy) for side in ("long", "short")]
    cursor = await conn.execute(
        "SELECT signal_id, event_id, symbol, side, confidence, reason, strategy, price,"
        " pct_change, extract(epoch FROM signal_ts)::float8 FROM signals"
        " WHERE signal_id = ANY(%s)",
        (own,),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    return Signal(
        signal_id=row[0],
        event_id=row[1],
        symbol=row[2],
        side=row[3],
        confidence=float(row[4]),
        reason=row[5],
        strategy=row[6],
        price=float(row[7]),
        pct_change=float(row[8]),
        timestamp=float(row[9]),
    )


async def load_cooldown(conn: AsyncConnection[Any], md: MarketData) -> CooldownState:
    """The symbol's cooldown state: its newest signal."""
    cursor = await conn.execute(
        "SELECT signal_id, extract(epoch FROM signal_ts) FROM signals WHERE symbol = %s"
        " ORDER BY signal_ts DESC LIMIT 1",
        (md.symbol,),
    )
    row = await cursor.fetchone()
    state = CooldownState()
    if row is not None:
        state.last[md.symbol] = LastSignal(row[0], float(row[1]))
    return state


async def insert_signal(conn: AsyncConnection[Any], signal: Signal) -> bool:
    """Persist the signal; False when it was already there (a redelivery)."""
    cursor = await conn.execute(
        """
        INSERT INTO signals (signal_id, event_id, symbol, side, confidence, reason, strategy,
                             price, pct_change, signal_ts)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s))
        ON CONFLICT (signal_id) DO NOTHING
        RETURNING signal_id
        """,
        (
            signal.signal_id,
            signal.event_id,
            signal.symbol,
            signal.side,
            signal.confidence,
            signal.reason,
            signal.strategy,
            signal.price,
            signal.pct_change,
            signal.timestamp,
        ),
    )
    return await cursor.fetchone() is not None
