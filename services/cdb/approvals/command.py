"""``cdb approvals`` (the held orders), ``cdb approve ORDER_ID``, ``cdb veto ORDER_ID``.

A decision is an ``approval_decision`` event on ``cdb:approval_decisions``, the same path
the console takes; risk_manager applies the first decision of a pending order and ignores
the rest. PostgreSQL (``POSTGRES_*``) is read for the list and to say what became of the
order; Redis (``REDIS_*``) needs a user that may append to that stream (``console``, or the
admin). With no ``REDIS_PASSWORD`` set and a demo's data directory (``.cdb``) present, the
demo's stack is used on its default ports, as the ``console`` user. Registered in
:mod:`cdb.cli`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import os
import time
from pathlib import Path
from typing import Any, Literal

import typer

from cdb.core.bus import BUS_ERRORS, Bus, connect_redis
from cdb.core.config import PostgresSettings, RedisSettings, load_settings_or_exit
from cdb.core.db import DatabaseError, connect_sync
from cdb.core.events import ApprovalDecision, Stream
from cdb.localstack import LocalStack

__all__ = ["approvals", "approve", "veto"]

DEMO_DIR = Path(__file__).resolve().parents[3] / ".cdb"


def _demo_defaults(data_dir: Path = DEMO_DIR) -> None:
    """The demo's stack (its default ports, the ``console`` user) when nothing else is set."""
    stack = LocalStack(data_dir)
    console_password = stack.redis.data_dir / "users" / "console.password"
    if "REDIS_PASSWORD" in os.environ or not console_password.exists():
        return
    for name, value in {**stack.env(), **stack.redis.user_env("console")}.items():
        os.environ.setdefault(name, value)


def _query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    _demo_defaults()
    settings = load_settings_or_exit(PostgresSettings)
    try:
        with connect_sync(settings, timeout_s=5) as conn:
            return list(conn.execute(sql, params).fetchall())
    except DatabaseError as error:
        typer.echo(f"postgres at {settings.postgres_host}: {error}".strip(), err=True)
        raise typer.Exit(2) from None


def approvals(
    everything: bool = typer.Option(False, "--all", help="Decided ones too (the newest 50)."),
) -> None:
    """The orders waiting for your approval: order id, symbol, side, notional, time left."""
    where = "" if everything else "WHERE state = 'pending'"
    rows = _query(
        "SELECT order_id, symbol, side, (order_json->>'notional')::float,"
        " extract(epoch FROM expires_at), state, coalesce(decided_by, ''),"
        f" coalesce(reason, '') FROM approvals {where} ORDER BY requested_at DESC LIMIT 50"
    )
    if not rows:
        typer.echo("no orders waiting for approval" if not everything else "no held orders")
        return
    now = time.time()
    for order_id, symbol, side, notional, expires, state, by, reason in rows:
        if state == "pending":
            left = f"{max(0, int(float(expires) - now))} s left"
        else:
            left = f"{state} by {by}" + (f" ({reason})" if reason else "")
        typer.echo(f"{order_id}  {symbol}  {side}  {notional:.2f} USDT  {left}")


def _decide(order_id: str, decision: Literal["approve", "veto"], actor: str, reason: str) -> None:
    rows = _query("SELECT state FROM approvals WHERE order_id = %s", (order_id,))
    if not rows:
        typer.echo(f"no held order {order_id} (cdb approvals lists them)", err=True)
        raise typer.Exit(1)
    if rows[0][0] != "pending":
        typer.echo(f"order {order_id} is {rows[0][0]} already: nothing sent", err=True)
        raise typer.Exit(1)
    event = ApprovalDecision(
        order_id=order_id, decision=decision, actor=actor, reason=reason, timestamp=time.time()
    )
    settings = load_settings_or_exit(RedisSettings)

    async def send() -> None:
        bus = Bus(connect_redis(settings), publish_timeout_s=10.0)
        try:
            await bus.publish(event, Stream.APPROVAL_DECISIONS)
        finally:
            await bus.close()

    try:
        asyncio.run(send())
    except BUS_ERRORS as error:
        typer.echo(f"redis at {settings.redis_host}:{settings.redis_port}: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{decision} of {order_id} sent as {actor} (event {event.event_id})")
    _await_outcome(order_id)


def _await_outcome(order_id: str, timeout_s: float = 10.0) -> None:
    """What risk_manager made of it, when it answers within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = _query(
            "SELECT state, coalesce(decided_by, ''), decided_at FROM approvals WHERE order_id = %s",
            (order_id,),
        )
        state, by, at = rows[0]
        if state != "pending":
            when = at.astimezone(dt.UTC).strftime("%H:%M:%S UTC") if at else ""
            typer.echo(f"order {order_id}: {state} by {by} at {when}")
            return
        time.sleep(0.2)
    typer.echo(f"order {order_id}: still pending (is risk_manager running?)")


def _actor(actor: str) -> str:
    return actor or f"cli:{getpass.getuser()}"


def approve(
    order_id: str = typer.Argument(..., help="The held order's id (cdb approvals)."),
    actor: str = typer.Option("", help="Who decides, for the audit trail (default cli:$USER)."),
) -> None:
    """Release a held order to execution_service, unchanged (same order id)."""
    _decide(order_id, "approve", _actor(actor), "")


def veto(
    order_id: str = typer.Argument(..., help="The held order's id (cdb approvals)."),
    reason: str = typer.Option("", "--reason", help="Why, recorded with the rejection."),
    actor: str = typer.Option("", help="Who decides, for the audit trail (default cli:$USER)."),
) -> None:
    """Reject a held order; its reservation is released and the reason recorded."""
    _decide(order_id, "veto", _actor(actor), reason[:500])
