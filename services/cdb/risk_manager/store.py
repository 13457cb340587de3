"""risk_manager's PostgreSQL side: the book is written inside one transaction under one
advisory lock, so replicas and redeliveries see one consistent book; the lock's version row
tells a replica when its book in memory (``ledger.py``) must be loaded again."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from cdb.core.db import AsyncConnection, AsyncCursor, Jsonb
from cdb.core.events import MlSignal, Order
from cdb.risk_manager.ledger import Ledger
from cdb.risk_manager.rules import ACTIVE, BookPosition, DayState, RiskBook, utc_day

__all__ = [
    "ask_lock",
    "ask_lock_and_decisions",
    "ask_lock_and_seen_keys",
    "insert_decision",
    "insert_ml_signal",
    "insert_risk_event",
    "load_ledger",
    "load_position",
    "load_positions",
    "lock_book",
    "read_version",
    "read_version_and_decisions",
    "read_version_and_seen_keys",
    "record_result",
    "save_day",
    "save_position",
]

Conn = AsyncConnection[Any]
Cursor = AsyncCursor[Any]


async def lock_book(conn: Conn) -> int:
    """Take the book lock and bump the book's version; returns the new version. Every
    transaction that may write the book starts here, so a replica whose last seen version
    is not the one before its own bump knows another one wrote in between."""
    return await read_version(await ask_lock(conn))


_LOCK = "SELECT pg_advisory_xact_lock(hashtext('cdb:risk_book'))"
_BUMP = "UPDATE risk_book_version SET version = version + 1 RETURNING version"


async def _ask_bump(conn: Conn, also: str = "", params: Any = None) -> Cursor:
    """The lock, then the bump (two statements: the bump must read after the lock). Its
    ``RETURNING`` may ``also`` read what the transaction reads first: the bump's snapshot
    is taken after the lock, as a SELECT's of its own would be, and saves that statement."""
    await conn.execute(_LOCK)
    return await conn.execute(f"{_BUMP}{also}", params)


async def _bumped(cursor: Cursor) -> Any:
    row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("risk_book_version has no row: migration 0010 not applied")
    return row


async def ask_lock(conn: Conn) -> Cursor:
    """:func:`lock_book` sent (in pipeline mode: queued with what follows); the version
    comes with :func:`read_version`."""
    return await _ask_bump(conn)


async def read_version(cursor: Cursor) -> int:
    return int((await _bumped(cursor))[0])


async def ask_lock_and_decisions(conn: Conn, signal_ids: list[str]) -> Cursor:
    """:func:`ask_lock` whose bump also reads the decisions of ``signal_ids`` (a batch, or one);
    see :func:`read_version_and_decisions`."""
    return await _ask_bump(
        conn,
        ", (SELECT coalesce(jsonb_agg(jsonb_build_array(signal_id, decision, order_event)),"
        " '[]'::jsonb) FROM risk_decisions WHERE signal_id = ANY(%(ids)s))",
        {"ids": signal_ids},
    )


async def read_version_and_decisions(
    cursor: Cursor,
) -> tuple[int, dict[str, tuple[str, Order | None]]]:
    """The new book version, and the decided signals among the asked ones (a batch, or one
    signal) with their orders."""
    row = await _bumped(cursor)
    rows = row[1] if isinstance(row[1], list) else json.loads(row[1])
    return int(row[0]), {str(r[0]): _decision(r[1], r[2]) for r in rows}


async def ask_lock_and_seen_keys(conn: Conn, keys: list[str]) -> Cursor:
    """:func:`ask_lock` whose bump also reads which of the results ``keys`` (a batch) were
    applied (a batch, or one); see :func:`read_version_and_seen_keys`."""
    return await _ask_bump(
        conn,
        ", (SELECT coalesce(array_agg(event_key), '{}') FROM equity"
        " WHERE event_key = ANY(%(keys)s))",
        {"keys": keys},
    )


async def read_version_and_seen_keys(cursor: Cursor) -> tuple[int, set[str]]:
    row = await _bumped(cursor)
    return int(row[0]), {str(key) for key in row[1]}


POSITION_COLUMNS = (
    "order_id, signal_id, symbol, side, quantity, notional, entry_price, stop_loss,"
    " status, fees, realized_pnl"
)


async def load_ledger(conn: Conn, starting_equity: float, now: float) -> Ledger:
    """The whole book from PostgreSQL: net PnL over every position, the active ones in
    full, today's state (at start, and after another replica wrote the book)."""
    pnl = await conn.execute("SELECT coalesce(sum(realized_pnl - fees), 0) FROM risk_positions")
    active = await conn.execute(
        f"SELECT {POSITION_COLUMNS} FROM risk_positions WHERE status = ANY(%s)",
        (list(ACTIVE),),
    )
    day = await conn.execute(
        "SELECT day, opening_equity, breaker_tripped_at IS NOT NULL, breaker_reason"
        " FROM risk_days WHERE day = %s",
        (utc_day(now),),
    )
    row = await pnl.fetchone()
    positions = [BookPosition(*r) for r in await active.fetchall()]
    today = await day.fetchone()
    return Ledger.of(
        starting_equity,
        float(row[0]) if row else 0.0,
        DayState(today[0], float(today[1]), bool(today[2]), today[3]) if today else None,
        positions,
    )


async def load_position(conn: Conn, order_id: str) -> BookPosition | None:
    """One position as stored, whatever its status."""
    cursor = await conn.execute(
        f"SELECT {POSITION_COLUMNS} FROM risk_positions WHERE order_id = %s", (order_id,)
    )
    row = await cursor.fetchone()
    return BookPosition(*row) if row is not None else None


async def load_positions(conn: Conn, order_ids: list[str]) -> dict[str, BookPosition]:
    """:func:`load_position` for several orders in one statement."""
    cursor = await conn.execute(
        f"SELECT {POSITION_COLUMNS} FROM risk_positions WHERE order_id = ANY(%s)", (order_ids,)
    )
    return {row[0]: BookPosition(*row) for row in await cursor.fetchall()}


async def save_day(conn: Conn, today: DayState, *, reset: bool = False) -> None:
    await conn.execute(
        """
        INSERT INTO risk_days (day, opening_equity, breaker_tripped_at, breaker_reason)
        VALUES (%(day)s, %(opening)s, CASE WHEN %(tripped)s THEN now() END, %(reason)s)
        ON CONFLICT (day) DO UPDATE SET
            opening_equity = EXCLUDED.opening_equity,
            breaker_tripped_at = CASE WHEN %(tripped)s
                THEN coalesce(risk_days.breaker_tripped_at, now()) END,
            breaker_reason = EXCLUDED.breaker_reason,
            alert_published = CASE WHEN %(tripped)s THEN risk_days.alert_published ELSE false END,
            reset_at = CASE WHEN %(reset)s THEN now() ELSE risk_days.reset_at END
        """,
        {
            "day": today.day,
            "opening": today.opening_equity,
            "tripped": today.breaker_tripped,
            "reason": today.breaker_reason,
            "reset": reset,
        },
    )


_SAVE_POSITION = """
    INSERT INTO risk_positions (order_id, signal_id, symbol, side, quantity, notional,
        entry_price, stop_loss, status, fees, realized_pnl)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (order_id) DO UPDATE SET quantity = EXCLUDED.quantity,
        notional = EXCLUDED.notional, entry_price = EXCLUDED.entry_price,
        status = EXCLUDED.status, fees = EXCLUDED.fees,
        realized_pnl = EXCLUDED.realized_pnl, updated_at = now()
"""


def _position_params(p: BookPosition) -> tuple[Any, ...]:
    return (
        p.order_id,
        p.signal_id,
        p.symbol,
        p.side,
        p.quantity,
        p.notional,
        p.entry_price,
        p.stop_loss,
        p.status,
        p.fees,
        p.realized_pnl,
    )


def _with_position(
    sql: str, params: tuple[Any, ...], position: BookPosition | None
) -> tuple[str, tuple[Any, ...]]:
    """``sql`` preceded by the position's upsert as a data-modifying ``WITH``: one statement
    for two writes to different tables (no key between them), where two statements cost
    twice the sending and polling in pipeline mode."""
    if position is None:
        return sql, params
    return f"WITH saved_position AS ({_SAVE_POSITION}) {sql}", (
        *_position_params(position),
        *params,
    )


async def save_position(conn: Conn, p: BookPosition) -> None:
    await conn.execute(_SAVE_POSITION, _position_params(p))


def _decision(decision: Any, order_event: Any) -> tuple[str, Order | None]:
    order = None
    if order_event is not None:
        data = order_event if isinstance(order_event, dict) else json.loads(order_event)
        order = Order.model_validate_json(json.dumps(data))
    return str(decision), order


async def insert_decision(
    conn: Conn,
    signal_id: str,
    order: Order | None,
    reason: str = "",
    *,
    held: bool = False,
    position: BookPosition | None = None,
) -> None:
    """``approved`` (or ``held`` for the owner's approval) with its order, or ``rejected``;
    with ``position`` (the order's reservation) saved in the same statement."""
    decision = "rejected" if order is None else "held" if held else "approved"
    sql, params = _with_position(
        "INSERT INTO risk_decisions (signal_id, decision, order_id, reason, order_event)"
        " VALUES (%s, %s, %s, %s, %s)",
        (
            signal_id,
            decision,
            order.order_id if order is not None else None,
            reason,
            Jsonb(order.model_dump(mode="json")) if order is not None else None,
        ),
        position,
    )
    await conn.execute(sql, params)


async def insert_risk_event(
    conn: Conn,
    key: str,
    kind: str,
    reason: str,
    *,
    signal_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO risk_events (event_key, kind, signal_id, reason, details)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_key) DO NOTHING",
        (key, kind, signal_id, reason, Jsonb(details or {})),
    )


async def record_result(
    conn: Conn,
    key: str,
    book: RiskBook,
    delta: float,
    reason: str,
    *,
    position: BookPosition | None = None,
) -> None:
    """The result's ``equity`` row (its key makes it once); with ``position`` (what the
    result made of it) saved in the same statement."""
    sql, params = _with_position(
        "INSERT INTO equity (event_key, equity, realized_pnl, exposure, reason)"
        " VALUES (%s, %s, %s, %s, %s)",
        (key, book.equity, delta, book.exposure, reason),
        position,
    )
    await conn.execute(sql, params)


async def insert_ml_signal(conn: Conn, ml: MlSignal) -> bool:
    cursor = await conn.execute(
        """
        INSERT INTO ml_signals (signal_id, event_id, symbol, side, model, model_version,
            confidence, price, top_features, signal_ts)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s))
        ON CONFLICT (signal_id) DO NOTHING RETURNING signal_id
        """,
        (
            ml.signal_id,
            ml.event_id,
            ml.symbol,
            ml.side,
            ml.model,
            ml.model_version,
            ml.confidence,
            ml.price,
            Jsonb([f.model_dump() for f in ml.top_features]),
            ml.timestamp,
        ),
    )
    return await cursor.fetchone() is not None


def day_key(day: dt.date) -> str:
    return day.isoformat()
