"""notifier's PostgreSQL side: notifications keyed by cause, one delivery row per channel.

A delivery is sent inside the transaction that holds its row (``FOR UPDATE SKIP
LOCKED``) and marked sent in the same transaction, so two replicas never send one
delivery, and a crash mid-send leaves it pending, to be sent again with the same
message id (see docs/NOTIFICATIONS.md, "delivery you can trust").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from cdb.notifier.messages import Notification, PushAction

__all__ = [
    "DaySummary",
    "Due",
    "day_summary",
    "delivery_counts",
    "due",
    "lock_pending",
    "mark_failed",
    "mark_retry",
    "mark_sent",
    "recent",
    "record",
]

Conn = AsyncConnection[Any]


@dataclass(frozen=True)
class Due:
    """A pending delivery whose time has come, with its notification."""

    notification: Notification
    attempts: int


async def record(
    conn: Conn, notification: Notification, channels: Sequence[str], not_before: datetime
) -> bool:
    """Store it with a pending delivery per channel; False when its cause was seen before."""
    cursor = await conn.execute(
        "INSERT INTO notifications (key, kind, severity, group_key, title, body, bot, symbol,"
        " actions, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (key) DO NOTHING RETURNING key",
        (
            notification.key,
            notification.kind,
            notification.severity,
            notification.group_key,
            notification.title,
            notification.body,
            notification.bot,
            notification.symbol,
            Jsonb([a.model_dump() for a in notification.actions]),
            Jsonb(notification.data),
        ),
    )
    if await cursor.fetchone() is None:
        return False
    for channel in channels:
        await conn.execute(
            "INSERT INTO notification_deliveries (key, channel, next_attempt_at)"
            " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (notification.key, channel, not_before),
        )
    return True


_COLUMNS = (
    "n.key, n.kind, n.severity, n.group_key, n.title, n.body, n.bot, n.symbol, d.attempts,"
    " n.actions, n.data"
)


def _due(row: Sequence[Any]) -> Due:
    return Due(
        Notification(
            key=row[0],
            kind=row[1],
            severity=row[2],
            group_key=row[3],
            title=row[4],
            body=row[5],
            bot=row[6],
            symbol=row[7],
            actions=tuple(PushAction.model_validate(a) for a in row[9] or []),
            data=row[10] or {},
        ),
        int(row[8]),
    )


async def due(conn: Conn, channel: str, now: datetime, limit: int = 500) -> list[Due]:
    """Pending deliveries of ``channel`` whose time has come, oldest first (no lock)."""
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM notification_deliveries d JOIN notifications n USING (key)"
        " WHERE d.channel = %s AND d.status = 'pending' AND d.next_attempt_at <= %s"
        " ORDER BY n.created_at, n.key LIMIT %s",
        (channel, now, limit),
    )
    return [_due(row) for row in await cursor.fetchall()]


async def lock_pending(conn: Conn, channel: str, keys: Sequence[str]) -> list[Due]:
    """Of ``keys``, those still pending and not held by another sender, locked until commit."""
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM notification_deliveries d JOIN notifications n USING (key)"
        " WHERE d.channel = %s AND d.key = ANY(%s) AND d.status = 'pending'"
        " ORDER BY n.created_at, n.key FOR UPDATE OF d SKIP LOCKED",
        (channel, list(keys)),
    )
    return [_due(row) for row in await cursor.fetchall()]


async def mark_sent(conn: Conn, channel: str, keys: Sequence[str], message_id: str) -> None:
    await conn.execute(
        "UPDATE notification_deliveries SET status = 'sent', sent_at = now(),"
        " attempts = attempts + 1, message_id = %s, last_error = ''"
        " WHERE channel = %s AND key = ANY(%s)",
        (message_id, channel, list(keys)),
    )


async def mark_retry(
    conn: Conn, channel: str, keys: Sequence[str], error: str, next_at: datetime
) -> None:
    await conn.execute(
        "UPDATE notification_deliveries SET attempts = attempts + 1, last_error = %s,"
        " next_attempt_at = %s WHERE channel = %s AND key = ANY(%s)",
        (error[:1000], next_at, channel, list(keys)),
    )


async def mark_failed(conn: Conn, channel: str, keys: Sequence[str], error: str) -> None:
    await conn.execute(
        "UPDATE notification_deliveries SET status = 'failed', attempts = attempts + 1,"
        " last_error = %s WHERE channel = %s AND key = ANY(%s)",
        (error[:1000], channel, list(keys)),
    )


async def delivery_counts(conn: Conn) -> dict[str, dict[str, int]]:
    """{channel: {status: count}} for /status."""
    cursor = await conn.execute(
        "SELECT channel, status, count(*) FROM notification_deliveries GROUP BY channel, status"
    )
    counts: dict[str, dict[str, int]] = {}
    for channel, status, count in await cursor.fetchall():
        counts.setdefault(channel, {})[status] = int(count)
    return counts


async def recent(conn: Conn, limit: int = 20) -> list[dict[str, Any]]:
    """The newest notifications with each channel's state, for /status and the demo view."""
    cursor = await conn.execute(
        "SELECT n.key, n.kind, n.severity, n.title, extract(epoch FROM n.created_at)::float8,"
        " coalesce(json_object_agg(d.channel, json_build_object('status', d.status,"
        " 'attempts', d.attempts, 'error', d.last_error)) FILTER (WHERE d.channel IS NOT NULL),"
        " '{}'::json)"
        " FROM notifications n LEFT JOIN notification_deliveries d USING (key)"
        " GROUP BY n.key ORDER BY n.created_at DESC, n.key LIMIT %s",
        (limit,),
    )
    return [
        {
            "key": row[0],
            "kind": row[1],
            "severity": row[2],
            "title": row[3],
            "created_at": row[4],
            "channels": row[5],
        }
        for row in await cursor.fetchall()
    ]


@dataclass(frozen=True)
class DaySummary:
    day: str
    trades: int
    closes: int
    realized_pnl: float
    fees: float
    exposure: float
    open_positions: int
    breaker_active: bool


async def day_summary(conn: Conn, day: datetime) -> DaySummary:
    """The UTC day's trading in figures, from the books the trading services keep."""
    date = day.date()
    cursor = await conn.execute(
        "SELECT count(*) FILTER (WHERE kind = 'open'), count(*) FILTER (WHERE kind = 'close'),"
        " coalesce(sum(realized_pnl), 0), coalesce(sum(fee), 0)"
        " FROM fills WHERE created_at >= %s::date AND created_at < %s::date + 1",
        (date, date),
    )
    trades, closes, pnl, fees = await cursor.fetchone() or (0, 0, 0.0, 0.0)
    cursor = await conn.execute(
        "SELECT coalesce(sum(notional), 0), count(*) FROM risk_positions"
        " WHERE status IN ('reserved', 'open', 'unknown')"
    )
    exposure, positions = await cursor.fetchone() or (0.0, 0)
    cursor = await conn.execute(
        "SELECT breaker_tripped_at IS NOT NULL AND reset_at IS NULL FROM risk_days WHERE day = %s",
        (date,),
    )
    breaker = await cursor.fetchone()
    return DaySummary(
        day=date.isoformat(),
        trades=int(trades),
        closes=int(closes),
        realized_pnl=float(pnl),
        fees=float(fees),
        exposure=float(exposure),
        open_positions=int(positions),
        breaker_active=bool(breaker[0]) if breaker else False,
    )
