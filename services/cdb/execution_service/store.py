"""execution_service's books in PostgreSQL: order, fill and position change in one
transaction, keyed by ``order_id`` (a primary key, so a redelivery cannot write twice)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from cdb.core.db import AsyncConnection, AsyncCursor, DatabaseError
from cdb.core.events import Order, TradingMode
from cdb.execution_service.book import Fill, OpenPosition

__all__ = [
    "LiveState",
    "OrderState",
    "approved_order",
    "ask_live_state",
    "ask_lock_order",
    "ask_order_state",
    "ask_xact_lock_order",
    "close_position",
    "count_submit",
    "database_now",
    "insert_order",
    "live_state",
    "load_open_positions",
    "lock_order",
    "open_position",
    "open_positions_of_mode",
    "order_status",
    "orders_to_reconcile",
    "read_live_state",
    "read_lock",
    "read_order_state",
    "realized_pnl",
    "set_order_status",
    "unlock_order",
    "write_opening",
]

Conn = AsyncConnection[Any]
Cursor = AsyncCursor[Any]


@dataclass(frozen=True)
class OrderState:
    """What executing an order reads before it acts, in one statement: the order's
    status (None: not known yet), the order risk_manager approved for its signal (None:
    no approved decision) and the transaction's ``now()`` (epoch s), what a position
    opened in it stores as ``opened_at``."""

    status: str | None
    approved: Order | None
    clock: float


_ORDER_STATE = (
    "SELECT (SELECT status FROM orders WHERE order_id = %s),"
    " (SELECT order_event FROM risk_decisions WHERE signal_id = %s AND decision = 'approved'),"
    " extract(epoch FROM now())"
)


async def ask_order_state(conn: Conn, order: Order) -> Cursor:
    """:func:`read_order_state`'s query sent (queued in pipeline mode): one statement for
    the three reads (both subqueries hit a primary key: at most one row each)."""
    return await conn.execute(_ORDER_STATE, (order.order_id, order.signal_id))


async def _one(cursor: Cursor) -> Any:
    """The row of a statement that always answers one (a SELECT without FROM, an
    INSERT … RETURNING)."""
    row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("the database answered no row where it always returns one")
    return row


async def read_order_state(cursor: Cursor) -> OrderState:
    status, event, clock = await _one(cursor)
    approved = None if event is None else Order.model_validate_json(json.dumps(event))
    return OrderState(None if status is None else str(status), approved, float(clock))


async def approved_order(conn: Conn, signal_id: str) -> Order | None:
    """The order risk_manager approved for ``signal_id`` (its decision row), if any."""
    cursor = await conn.execute(
        "SELECT order_event FROM risk_decisions WHERE signal_id = %s AND decision = 'approved'",
        (signal_id,),
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return None
    return Order.model_validate_json(json.dumps(row[0]))


async def order_status(conn: Conn, order_id: str) -> str | None:
    cursor = await conn.execute("SELECT status FROM orders WHERE order_id = %s", (order_id,))
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def insert_order(
    conn: Conn,
    order: Order,
    status: Literal["pending", "filled", "rejected"],
    mode: Literal["paper", "live"],
    reason: str = "",
    *,
    submit_attempts: int = 0,
) -> None:
    """The order row; a known order id writes nothing (``ON CONFLICT DO NOTHING``)."""
    await conn.execute(
        """
        INSERT INTO orders (order_id, signal_id, symbol, side, quantity, notional, price,
                            stop_loss, mode, status, external_id, reason, submit_attempts)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (order_id) DO NOTHING
        """,
        (
            order.order_id,
            order.signal_id,
            order.symbol,
            order.side,
            order.quantity,
            order.notional,
            order.price,
            order.stop_loss,
            mode,
            status,
            order.order_id if mode == "live" else None,
            reason[:500],
            submit_attempts,
        ),
    )


async def set_order_status(conn: Conn, order_id: str, status: str, reason: str = "") -> None:
    await conn.execute(
        "UPDATE orders SET status = %s, reason = %s, updated_at = now() WHERE order_id = %s",
        (status, reason[:500], order_id),
    )


async def open_position(conn: Conn, order: Order, fill: Fill) -> float:
    """The entry fill and the open position of a filled order; returns its ``opened_at``
    (epoch seconds), the time the stop watch measures bars against, in memory as stored."""
    return await read_clock(await write_opening(conn, order, fill))


async def write_opening(conn: Conn, order: Order, fill: Fill) -> Cursor:
    """:func:`open_position`'s two inserts sent (queued in pipeline mode); the cursor
    returns ``opened_at``, which is the transaction's ``now()`` (:class:`OrderState`'s clock)."""
    await conn.execute(
        "INSERT INTO fills (fill_id, order_id, symbol, side, kind, price, quantity, fee)"
        " VALUES (%s, %s, %s, %s, 'open', %s, %s, %s)",
        (
            f"{order.order_id}:open",
            order.order_id,
            order.symbol,
            order.side,
            fill.price,
            fill.quantity,
            fill.fee,
        ),
    )
    return await conn.execute(
        "INSERT INTO positions (position_id, order_id, symbol, side, quantity, entry_price,"
        " stop_loss, status) VALUES (%s, %s, %s, %s, %s, %s, %s, 'open')"
        " RETURNING extract(epoch FROM opened_at)",
        (
            order.order_id,
            order.order_id,
            order.symbol,
            order.side,
            fill.quantity,
            fill.price,
            order.stop_loss,
        ),
    )


async def close_position(conn: Conn, position: OpenPosition, fill: Fill) -> bool:
    """Close once: False when the position was no longer open."""
    cursor = await conn.execute(
        "UPDATE positions SET status = 'closed', exit_price = %s, realized_pnl = %s,"
        " closed_at = now() WHERE position_id = %s AND status = 'open' RETURNING position_id",
        (fill.price, fill.realized_pnl, position.order_id),
    )
    if await cursor.fetchone() is None:
        return False
    await conn.execute(
        "INSERT INTO fills (fill_id, order_id, symbol, side, kind, price, quantity, fee,"
        " realized_pnl) VALUES (%s, %s, %s, %s, 'close', %s, %s, %s, %s)",
        (
            f"{position.order_id}:close",
            position.order_id,
            position.symbol,
            position.side,
            fill.price,
            fill.quantity,
            fill.fee,
            fill.realized_pnl,
        ),
    )
    return True


async def load_open_positions(conn: Conn) -> list[OpenPosition]:
    cursor = await conn.execute(
        "SELECT order_id, symbol, side, quantity, entry_price, stop_loss,"
        " extract(epoch FROM opened_at) FROM positions WHERE status = 'open'"
    )
    return [
        OpenPosition(r[0], r[1], r[2], float(r[3]), float(r[4]), float(r[5]), float(r[6]))
        for r in await cursor.fetchall()
    ]


async def read_clock(cursor: Cursor) -> float:
    """The one epoch-seconds value a query answered (``now()``, ``RETURNING opened_at``)."""
    return float((await _one(cursor))[0])


async def database_now(conn: Conn) -> float:
    """The database's clock (epoch s): what ``opened_at`` is measured on."""
    return await read_clock(await conn.execute("SELECT extract(epoch FROM clock_timestamp())"))


async def realized_pnl(conn: Conn) -> float:
    """Realised PnL of every closed position (fees apart)."""
    cursor = await conn.execute(
        "SELECT coalesce(sum(realized_pnl), 0) FROM positions WHERE status = 'closed'"
    )
    row = await cursor.fetchone()
    return float(row[0]) if row else 0.0


async def open_positions_of_mode(conn: Conn, mode: TradingMode) -> list[OpenPosition]:
    """Open positions of one venue's orders (``mode``), for reconciling with the venue."""
    cursor = await conn.execute(
        "SELECT p.order_id, p.symbol, p.side, p.quantity, p.entry_price, p.stop_loss,"
        " extract(epoch FROM p.opened_at) FROM positions p JOIN orders o USING (order_id)"
        " WHERE p.status = 'open' AND o.mode = %s",
        (mode,),
    )
    return [
        OpenPosition(r[0], r[1], r[2], float(r[3]), float(r[4]), float(r[5]), float(r[6]))
        for r in await cursor.fetchall()
    ]


async def orders_to_reconcile(conn: Conn, mode: TradingMode) -> list[Order]:
    """Orders of one venue whose outcome is not known yet: pending (sent or not) and
    unknown, oldest first."""
    cursor = await conn.execute(
        "SELECT order_id, signal_id, symbol, side, quantity, notional, price, stop_loss,"
        " extract(epoch FROM created_at) FROM orders"
        " WHERE mode = %s AND status IN ('pending', 'unknown') ORDER BY created_at",
        (mode,),
    )
    return [
        Order(
            event_id=r[0],
            order_id=r[0],
            signal_id=r[1],
            symbol=r[2],
            side=r[3],
            quantity=float(r[4]),
            notional=float(r[5]),
            price=float(r[6]),
            stop_loss=float(r[7]),
            mode=mode,
            timestamp=float(r[8]),
        )
        for r in await cursor.fetchall()
    ]


# -- one worker at a time per order, submits counted before they are made -------------------


@dataclass(frozen=True)
class LiveState:
    status: str
    submit_attempts: int


def _order_lock_key(order_id: str) -> str:
    return f"cdb:live-order:{order_id}"


async def lock_order(conn: Conn, order_id: str) -> bool:
    """Take the order's session advisory lock on ``conn`` (False: another worker has it).
    The key keeps its historical ``live-order`` name; paper orders take it too.
    The lock dies with the connection, so a crashed worker never holds an order."""
    return await read_lock(await ask_lock_order(conn, order_id))


async def ask_lock_order(conn: Conn, order_id: str) -> Cursor:
    """:func:`lock_order` sent (queued in pipeline mode); see :func:`read_lock`."""
    return await conn.execute(
        "SELECT pg_try_advisory_lock(hashtext(%s))", (_order_lock_key(order_id),)
    )


async def ask_xact_lock_order(conn: Conn, order_id: str) -> Cursor:
    """The order's lock (:func:`lock_order`'s) until the transaction ends, waited for:
    a worker that holds it finishes its step first, and what it wrote is read after."""
    return await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s))", (_order_lock_key(order_id),)
    )


async def read_lock(cursor: Cursor) -> bool:
    row = await cursor.fetchone()
    return bool(row and row[0])


async def unlock_order(conn: Conn, order_id: str) -> None:
    with contextlib.suppress(DatabaseError):  # the connection is gone, and its lock with it
        await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_order_lock_key(order_id),))


async def live_state(conn: Conn, order_id: str) -> LiveState | None:
    return await read_live_state(await ask_live_state(conn, order_id))


async def ask_live_state(conn: Conn, order_id: str) -> Cursor:
    return await conn.execute(
        "SELECT status, submit_attempts FROM orders WHERE order_id = %s", (order_id,)
    )


async def read_live_state(cursor: Cursor) -> LiveState | None:
    row = await cursor.fetchone()
    return None if row is None else LiveState(str(row[0]), int(row[1]))


async def count_submit(conn: Conn, order_id: str) -> None:
    """On an autocommit connection, so it is durable before the POST: after a crash, the
    order is known to have maybe been sent."""
    await conn.execute(
        "UPDATE orders SET submit_attempts = submit_attempts + 1, updated_at = now()"
        " WHERE order_id = %s",
        (order_id,),
    )
