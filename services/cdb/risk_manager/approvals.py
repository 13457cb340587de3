"""Manual approval mode: held orders in ``approvals`` and their one decision.

An order the rules approve is held (``state = 'pending'``, its position reserved, its
decision row ``held``) until the owner approves it, vetoes it, or it expires. Every state
change is a conditional ``UPDATE ... WHERE state = 'pending'`` made under the book lock, so
at most one decision per order takes effect (the first); each one writes a
``config_audit`` row (field ``approvals.<order_id>``, who decided) in the same transaction.
docs/TRADING_PIPELINE.md ("Approval mode") has the state machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from cdb.core.control import AppliedControl
from cdb.core.db import AsyncConnection, Jsonb
from cdb.core.events import ApprovalRequest, Order

__all__ = [
    "EXPIRY_ACTOR",
    "ApprovalPolicy",
    "Held",
    "audit",
    "due",
    "find",
    "hold",
    "pending_count",
    "policy",
    "request_for",
    "settle",
]

Conn = AsyncConnection[Any]
Mode = Literal["auto", "manual"]
State = Literal["pending", "approved", "vetoed", "expired"]
EXPIRY_ACTOR = "risk_manager"  # who "decides" an expiry in the audit trail


@dataclass(frozen=True)
class ApprovalPolicy:
    mode: Mode
    timeout_s: int


def policy(mode: Mode, timeout_s: int, control: AppliedControl | None) -> ApprovalPolicy:
    """The settings' mode and timeout, unless the live config sets them."""
    if control is not None:
        if control.settings.approval is not None:
            mode = control.settings.approval
        if control.settings.approval_timeout_s is not None:
            timeout_s = control.settings.approval_timeout_s
    return ApprovalPolicy(mode, timeout_s)


@dataclass(frozen=True)
class Held:
    """One row of ``approvals``."""

    order: Order
    state: State
    expires_at: float
    decided_by: str | None
    decision_event_id: str | None


def request_for(
    order: Order,
    *,
    equity: float,
    exposure_after: float,
    reasons: list[str],
    now: float,
    expires_at: float,
) -> ApprovalRequest:
    return ApprovalRequest(
        event_id=f"approval-request-{order.order_id}",
        order=order,
        exposure_after_usdt=round(max(exposure_after, 0.0), 6),
        exposure_after_pct=round(100.0 * exposure_after / equity, 6) if equity > 0 else 0.0,
        equity_usdt=round(max(equity, 0.0), 6),
        reasons=[r[:500] for r in reasons][:20],
        expires_at=expires_at,
        timestamp=now,
    )


async def hold(conn: Conn, request: ApprovalRequest) -> None:
    order = request.order
    details = {
        "exposure_after_usdt": request.exposure_after_usdt,
        "exposure_after_pct": request.exposure_after_pct,
        "equity_usdt": request.equity_usdt,
        "reasons": request.reasons,
    }
    await conn.execute(
        """
        INSERT INTO approvals (order_id, signal_id, symbol, side, order_json, details,
            state, requested_at, expires_at)
        VALUES (%s, %s, %s, %s, %s, %s, 'pending', to_timestamp(%s), to_timestamp(%s))
        ON CONFLICT (order_id) DO NOTHING
        """,
        (
            order.order_id,
            order.signal_id,
            order.symbol,
            order.side,
            Jsonb(order.model_dump(mode="json")),
            Jsonb(details),
            request.timestamp,
            request.expires_at,
        ),
    )


async def find(conn: Conn, order_id: str) -> Held | None:
    """The row, locked for this transaction."""
    cursor = await conn.execute(
        "SELECT order_json, state, extract(epoch FROM expires_at), decided_by,"
        " decision_event_id FROM approvals WHERE order_id = %s FOR UPDATE",
        (order_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    order = Order.model_validate_json(json.dumps(data))
    return Held(order, row[1], float(row[2]), row[3], row[4])


async def due(conn: Conn, now: float) -> list[str]:
    """Pending orders whose window closed, oldest first."""
    cursor = await conn.execute(
        "SELECT order_id FROM approvals WHERE state = 'pending'"
        " AND expires_at <= to_timestamp(%s) ORDER BY expires_at LIMIT 100",
        (now,),
    )
    return [str(r[0]) for r in await cursor.fetchall()]


async def pending_count(conn: Conn) -> int:
    cursor = await conn.execute("SELECT count(*) FROM approvals WHERE state = 'pending'")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def settle(
    conn: Conn,
    order: Order,
    state: Literal["approved", "vetoed", "expired"],
    *,
    actor: str,
    reason: str,
    event_id: str | None,
    control: AppliedControl | None,
) -> bool:
    """The one decision of a pending order, with its effects on the books and its audit
    row; False (nothing written) when it was decided before."""
    cursor = await conn.execute(
        """
        UPDATE approvals SET state = %s, decided_at = now(), decided_by = %s, reason = %s,
            decision_event_id = %s
        WHERE order_id = %s AND state = 'pending'
        """,
        (state, actor, reason, event_id, order.order_id),
    )
    if cursor.rowcount != 1:
        return False
    if state == "approved":
        await conn.execute(
            "UPDATE risk_decisions SET decision = 'approved' WHERE signal_id = %s"
            " AND decision = 'held'",
            (order.signal_id,),
        )
    else:
        why = "expired: no answer in time" if state == "expired" else f"vetoed by {actor}"
        if reason and state == "vetoed":
            why += f": {reason}"
        await conn.execute(
            "UPDATE risk_decisions SET decision = 'rejected', reason = %s WHERE signal_id = %s"
            " AND decision = 'held'",
            (why[:500], order.signal_id),
        )
        # the reservation goes: exposure is free for the next signal
        await conn.execute(
            "UPDATE risk_positions SET status = 'released', updated_at = now()"
            " WHERE order_id = %s AND status = 'reserved'",
            (order.order_id,),
        )
        await conn.execute(
            "INSERT INTO risk_events (event_key, kind, signal_id, reason, details)"
            " VALUES (%s, 'rejection', %s, %s, %s) ON CONFLICT (event_key) DO NOTHING",
            (
                f"reject:{order.signal_id}",
                order.signal_id,
                f"{'expired' if state == 'expired' else 'vetoed'}: {why}"[:1000],
                Jsonb({"symbol": order.symbol, "side": order.side, "order_id": order.order_id}),
            ),
        )
    await audit(conn, order.order_id, state, actor=actor, control=control)
    return True


async def audit(
    conn: Conn, order_id: str, state: str, *, actor: str, control: AppliedControl | None
) -> None:
    """One ``config_audit`` row: the bot in force, field ``approvals.<order_id>``,
    ``pending`` → the state, who decided."""
    config_hash = control.config_hash if control else ""
    await conn.execute(
        """
        INSERT INTO config_audit (bot, bot_uid, generation, previous_config_hash, config_hash,
            field, old_value, new_value, actor)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            control.bot if control else "",
            control.bot_uid if control else "",
            control.generation if control else 0,
            config_hash,
            config_hash,
            f"approvals.{order_id}",
            Jsonb("pending"),
            Jsonb(state),
            actor[:253],
        ),
    )
