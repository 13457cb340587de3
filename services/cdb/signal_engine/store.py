"""signal_engine's PostgreSQL side: the cooldown state read and the signal written together."""

from __future__ import annotations

from typing import Any

from cdb.core.db import AsyncConnection, AsyncCursor
from cdb.core.events import MarketData, Signal
from cdb.signal_engine.strategy import CooldownState, LastSignal, signal_id_for

__all__ = [
    "ask_cooldown",
    "ask_own",
    "insert_signal",
    "load_cooldown",
    "lock_symbol",
    "own_signal",
    "read_cooldown",
    "read_own",
]

Cursor = AsyncCursor[Any]


async def lock_symbol(conn: AsyncConnection[Any], symbol: str) -> None:
    """Serialise decisions per symbol across replicas until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"signal:{symbol}",))


async def own_signal(conn: AsyncConnection[Any], md: MarketData, strategy: str) -> Signal | None:
    """The signal this window already made (a redelivery), exactly as it was stored."""
    return await read_own(await ask_own(conn, md, strategy))


async def ask_own(conn: AsyncConnection[Any], md: MarketData, strategy: str) -> Cursor:
    """:func:`own_signal`'s query sent (queued in pipeline mode); see :func:`read_own`."""
    own = [signal_id_for(md, side, strategy) for side in ("long", "short")]
    return await conn.execute(
        "SELECT signal_id, event_id, symbol, side, confidence, reason, strategy, price,"
        " pct_change, extract(epoch FROM signal_ts)::float8 FROM signals"
        " WHERE signal_id = ANY(%s)",
        (own,),
    )


async def read_own(cursor: Cursor) -> Signal | None:
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
    return await read_cooldown(await ask_cooldown(conn, md), md)


async def ask_cooldown(conn: AsyncConnection[Any], md: MarketData) -> Cursor:
    """:func:`load_cooldown`'s query sent (queued in pipeline mode)."""
    return await conn.execute(
        "SELECT signal_id, extract(epoch FROM signal_ts) FROM signals WHERE symbol = %s"
        " ORDER BY signal_ts DESC LIMIT 1",
        (md.symbol,),
    )


async def read_cooldown(cursor: Cursor, md: MarketData) -> CooldownState:
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
