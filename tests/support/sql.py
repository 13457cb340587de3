"""SQL for tests: reads of the books on a fresh connection each time, the approval a
stand-in for risk_manager writes, and a small seeded trading day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cdb.core.bus import Bus
from cdb.core.events import Order


def conninfo(env: dict[str, str]) -> str:
    return (
        f"host={env['POSTGRES_HOST']} port={env['POSTGRES_PORT']} "
        f"dbname={env['POSTGRES_DB']} user={env['POSTGRES_USER']}"
    )


def approve(env: dict[str, str], order: Order) -> None:
    """The decision row risk_manager writes for ``order``: without it execution_service
    refuses the order (tests that stand in for risk_manager write it first)."""
    with psycopg.connect(conninfo(env), connect_timeout=5, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO risk_decisions (signal_id, decision, order_id, order_event)"
            " VALUES (%s, 'approved', %s, %s) ON CONFLICT DO NOTHING",
            (order.signal_id, order.order_id, Jsonb(order.model_dump(mode="json"))),
        )


async def publish_approved(bus: Bus, env: dict[str, str], order: Order) -> None:
    """Approve ``order`` as risk_manager would, then put it on ``cdb:orders``."""
    await asyncio.to_thread(approve, env, order)
    await bus.publish(order)


def query(env: dict[str, str], sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """A fresh connection per read, so a PostgreSQL restart does not break the test."""
    with psycopg.connect(conninfo(env), connect_timeout=5, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())


def waiting_to_insert(env: dict[str, str], table: str) -> bool:
    """A backend's ``INSERT INTO <table>`` waits for a lock (one a test holds with
    ``LOCK TABLE``, to stop a service's transaction there before a kill)."""
    return bool(
        query(
            env,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            (f"%INSERT INTO {table}%",),
        )
    )


def scalar(env: dict[str, str], sql: str, params: Any = None) -> Any:
    try:
        rows = query(env, sql, params)
    except psycopg.Error:
        return None
    return rows[0][0] if rows else None


async def seed_books(conn: Any) -> None:
    """A small trading day: signals, two round trips (one win, one loss), a rejection."""
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    rows = [
        ("sig-1", "PEPE_USDT", "long", 0.45, 0.0000101, 4.5, start),
        ("sig-2", "WIF_USDT", "short", 0.38, 2.10, -3.8, start + timedelta(minutes=3)),
        ("sig-3", "PEPE_USDT", "long", 0.61, 0.0000109, 6.1, start + timedelta(minutes=6)),
    ]
    for sid, symbol, side, conf, price, pct, ts in rows:
        await conn.execute(
            "INSERT INTO signals (signal_id, event_id, symbol, side, confidence, reason,"
            " strategy, price, pct_change, signal_ts) VALUES"
            " (%s, %s, %s, %s, %s, 'momentum', 'momentum', %s, %s, %s)",
            (sid, f"ev-{sid}", symbol, side, conf, price, pct, ts),
        )
    trades = [
        ("ord-1", "sig-1", "PEPE_USDT", "long", 99_000_000.0, 0.0000101, 0.0000112, start),
        ("ord-2", "sig-2", "WIF_USDT", "short", 470.0, 2.10, 2.16, start + timedelta(minutes=3)),
    ]
    for oid, sid, symbol, side, qty, entry, exit_, ts in trades:
        notional = qty * entry
        pnl = (exit_ - entry) * qty * (1 if side == "long" else -1)
        await conn.execute(
            "INSERT INTO orders (order_id, signal_id, symbol, side, quantity, notional, price,"
            " stop_loss, mode, status, created_at) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, 'paper', 'filled', %s)",
            (oid, sid, symbol, side, qty, notional, entry, entry * 0.98, ts),
        )
        await conn.execute(
            "INSERT INTO fills (fill_id, order_id, symbol, side, kind, price, quantity, fee,"
            " realized_pnl, created_at) VALUES (%s, %s, %s, %s, 'open', %s, %s, %s, 0, %s)",
            (f"{oid}-open", oid, symbol, side, entry, qty, notional * 0.0006, ts),
        )
        await conn.execute(
            "INSERT INTO fills (fill_id, order_id, symbol, side, kind, price, quantity, fee,"
            " realized_pnl, created_at) VALUES (%s, %s, %s, %s, 'close', %s, %s, %s, %s, %s)",
            (f"{oid}-close", oid, symbol, side, exit_, qty, notional * 0.0006, pnl,
             ts + timedelta(minutes=10)),
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO positions (position_id, order_id, symbol, side, quantity, entry_price,"
            " stop_loss, status, exit_price, realized_pnl, opened_at, closed_at) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, 'closed', %s, %s, %s, %s)",
            (f"pos-{oid}", oid, symbol, side, qty, entry, entry * 0.98, exit_, pnl, ts,
             ts + timedelta(minutes=10)),
        )  # fmt: skip
    for minute, equity in enumerate((10_000.0, 10_000.0, 10_108.9, 10_080.7)):
        await conn.execute(
            "INSERT INTO equity (event_key, equity, realized_pnl, exposure, reason, recorded_at)"
            " VALUES (%s, %s, %s, %s, 'fill', %s)",
            (f"eq-{minute}", equity, equity - 10_000.0, 500.0 * minute,
             start + timedelta(minutes=5 * minute)),
        )  # fmt: skip
    await conn.execute(
        "INSERT INTO risk_events (event_key, kind, signal_id, reason, created_at)"
        " VALUES ('rej-sig-3', 'rejected', 'sig-3', 'max exposure', %s)",
        (start + timedelta(minutes=6),),
    )
