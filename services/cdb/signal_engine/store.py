"""signal_engine's PostgreSQL side: the cooldown state read and the signal written together."""

from __future__ import annotations

from typing import Any

from cdb.core.db import AsyncConnection, AsyncCursor
from cdb.core.events import MarketData, Signal
from cdb.signal_engine.strategy import CooldownState, LastSignal, signal_id_for

__all__ = [
    "ask_insert_signal",
    "ask_window",
    "lock_symbol",
    "read_inserted",
    "read_window",
]

Cursor = AsyncCursor[Any]


async def lock_symbol(conn: AsyncConnection[Any], symbol: str) -> None:
    """Serialise decisions per symbol across replicas until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"signal:{symbol}",))


# Both reads of a decision in one statement (one snapshot, taken after the symbol's lock,
# which is a statement of its own): the window's own signal (``own``; a redelivery) and
# the symbol's newest signal (``last``; the cooldown), told apart by the first column.
_WINDOW = (
    "(SELECT 'own', signal_id, event_id, symbol, side, confidence, reason, strategy, price,"
    " pct_change, extract(epoch FROM signal_ts)::float8 FROM signals"
    " WHERE signal_id = ANY(%s) LIMIT 1)"
    " UNION ALL"
    " (SELECT 'last', signal_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " extract(epoch FROM signal_ts)::float8 FROM signals WHERE symbol = %s"
    " ORDER BY signal_ts DESC LIMIT 1)"
)


async def ask_window(conn: AsyncConnection[Any], md: MarketData, strategy: str) -> Cursor:
    """:func:`read_window`'s query sent (queued in pipeline mode)."""
    own = [signal_id_for(md, side, strategy) for side in ("long", "short")]
    return await conn.execute(_WINDOW, (own, md.symbol))


async def read_window(cursor: Cursor, md: MarketData) -> tuple[Signal | None, CooldownState]:
    """The window's own signal (None: not made yet) and the symbol's cooldown state."""
    stored = None
    state = CooldownState()
    for row in await cursor.fetchall():
        if row[0] == "own":
            stored = Signal(
                signal_id=row[1],
                event_id=row[2],
                symbol=row[3],
                side=row[4],
                confidence=float(row[5]),
                reason=row[6],
                strategy=row[7],
                price=float(row[8]),
                pct_change=float(row[9]),
                timestamp=float(row[10]),
            )
        else:
            state.last[md.symbol] = LastSignal(row[1], float(row[10]))
    return stored, state


async def read_inserted(cursor: Cursor) -> bool:
    """Whether :func:`ask_insert_signal`'s row was new."""
    return await cursor.fetchone() is not None


async def ask_insert_signal(conn: AsyncConnection[Any], signal: Signal) -> Cursor:
    """Persist the signal (queued in pipeline mode); :func:`read_inserted` says whether
    it was new (False: a redelivery)."""
    return await conn.execute(
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
