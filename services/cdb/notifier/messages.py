"""What the owner is told, pure: events and Alertmanager alerts in, notifications out.

Every notification is keyed by its cause (the event id, the alert's fingerprint with its
status and start, the day of a summary), which is what makes a second delivery of the
same cause a no-op. Each says what happened, on which bot and symbol, and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cdb.core.events import Alert, ApprovalRequest, Control, OrderResult

__all__ = [
    "APPROVAL_ACTIONS",
    "AlertmanagerAlert",
    "AlertmanagerPayload",
    "DeadLetter",
    "Notification",
    "PushAction",
    "Severity",
    "daily_summary",
    "from_alert",
    "from_alertmanager",
    "from_approval_request",
    "from_control",
    "from_dead_letter",
    "from_order_result",
    "grouped",
]

Severity = Literal["info", "warning", "critical"]


class PushAction(BaseModel):
    """A WebPush notification action (``showNotification``'s ``actions`` entry)."""

    model_config = ConfigDict(frozen=True)

    action: str = Field(min_length=1, max_length=32)
    title: str = Field(min_length=1, max_length=64)


APPROVAL_ACTIONS = (PushAction(action="approve", title="Approve"),
                    PushAction(action="veto", title="Veto"))  # fmt: skip


class Notification(BaseModel):
    """One message to send, before it is stored."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(min_length=1, max_length=300)
    kind: str = Field(min_length=1, max_length=64)
    severity: Severity
    group_key: str = Field(min_length=1, max_length=200)
    title: str = Field(max_length=200)
    body: str = Field(max_length=4000)
    bot: str = ""
    symbol: str = ""
    # WebPush only: buttons, and what the service worker needs to act on them
    actions: tuple[PushAction, ...] = ()
    data: dict[str, str | float] = Field(default_factory=dict)


# -- the bus ------------------------------------------------------------------------


def from_alert(alert: Alert) -> Notification:
    """An ``alert`` event (risk_manager's circuit breaker, its reset, others)."""
    details = ", ".join(f"{name}={value}" for name, value in sorted(alert.details.items()))
    if alert.kind == "circuit_breaker":
        title = "Circuit breaker tripped: trading halted"
        action = (
            "No new position opens until the breaker resets (next UTC day, or "
            "POST /breaker/reset on risk_manager). Check the risk_events table."
        )
    elif alert.kind == "breaker_reset":
        title = "Circuit breaker reset: trading resumes"
        action = "Nothing to do; new signals are traded again."
    else:
        title = f"{alert.kind.replace('_', ' ').capitalize()} ({alert.source})"
        action = "See the service's log and /status."
    body = f"{alert.message}\n{details}\n{action}" if details else f"{alert.message}\n{action}"
    return Notification(
        key=f"event:{alert.event_id}",
        kind=alert.kind,
        severity=alert.severity,
        group_key=f"alert:{alert.kind}",
        title=title,
        body=body,
    )


def from_order_result(result: OrderResult, fills: str) -> Notification | None:
    """A stop-loss close, a fill (``fills``: all, closes, none), an order left unknown."""
    if result.status == "unknown":
        return Notification(
            key=f"event:{result.event_id}",
            kind="order_unknown",
            severity="critical",
            group_key="order:unknown",
            title=f"Order {result.order_id} on {result.symbol} is unknown to MEXC",
            body=(
                f"The {result.mode} {result.side} order {result.order_id} on {result.symbol} "
                f"was sent but MEXC does not know it ({result.reason or 'no reason given'}). "
                "execution_service keeps looking it up; check the position on MEXC's web "
                "page before trading this symbol by hand."
            ),
            symbol=result.symbol,
        )
    if result.status == "closed" and fills in ("all", "closes"):
        return Notification(
            key=f"event:{result.event_id}",
            kind="stop_loss",
            severity="warning",
            group_key="order:closed",
            title=f"Stop-loss closed {result.symbol} {result.side}",
            body=(
                f"{result.symbol} {result.side} {result.quantity:g} closed at "
                f"{result.fill_price:g}: realised PnL {result.realized_pnl:+.2f} USDT "
                f"({result.reason or 'stop hit'}, {result.mode}). Nothing to do; the "
                "risk limits already account for it."
            ),
            symbol=result.symbol,
        )
    if result.status == "filled" and fills == "all":
        return Notification(
            key=f"event:{result.event_id}",
            kind="fill",
            severity="info",
            group_key="order:filled",
            title=f"Filled {result.symbol} {result.side}",
            body=(
                f"{result.mode} {result.side} {result.quantity:g} {result.symbol} at "
                f"{result.fill_price:g}, fee {result.fee:.4f} USDT (order {result.order_id})."
            ),
            symbol=result.symbol,
        )
    return None


def from_control(control: Control) -> Notification:
    """A TradingBot change the operator sent to the services."""
    changed = control.settings.model_dump(exclude_none=True)
    what = ", ".join(f"{name}={value}" for name, value in sorted(changed.items())) or "nothing"
    return Notification(
        key=f"event:{control.event_id}",
        kind="control",
        severity="info",
        group_key=f"control:{control.bot}",
        title=f"TradingBot {control.bot} changed (generation {control.generation})",
        body=(
            f"The operator applied generation {control.generation} of {control.bot}: "
            f"{what}. Who changed it: `kubectl -n <ns> get events "
            f"--field-selector involvedObject.name={control.bot}` and the config_audit table."
        ),
        bot=control.bot,
    )


def from_approval_request(request: ApprovalRequest) -> Notification:
    """An order risk_manager holds for the owner: approve or veto before it expires."""
    order = request.order
    left = max(0, int(request.expires_at - request.timestamp))
    reasons = "\n".join(f"- {reason}" for reason in request.reasons)
    return Notification(
        key=f"event:{request.event_id}",
        kind="approval_request",
        severity="warning",
        group_key=f"approval:{order.order_id}",  # never grouped: each has its own buttons
        title=f"Approve {order.side} {order.symbol} {order.notional:.2f} USDT?",
        body=(
            f"{order.mode} {order.side} {order.quantity:.6g} {order.symbol} at "
            f"{order.price:.6g}, stop {order.stop_loss:.6g}; exposure after fill "
            f"{request.exposure_after_usdt:.2f} USDT ({request.exposure_after_pct:.1f}% of "
            f"equity {request.equity_usdt:.2f} USDT).\n{reasons}\n"
            f"Expires in {left} s (then vetoed). Approve or veto on the console "
            f"(/approvals/{order.order_id}) or with `cdb approve {order.order_id}` / "
            f"`cdb veto {order.order_id} --reason ...`."
        )[:4000],
        symbol=order.symbol,
        actions=APPROVAL_ACTIONS,
        data={
            "order_id": order.order_id,
            "url": f"/approvals/{order.order_id}",
            "expires_at": request.expires_at,
        },
    )


class DeadLetter(BaseModel):
    """An entry of ``cdb:dead_letter`` as the bus writes it."""

    entry_id: str
    stream: str
    group: str
    reason: str


def from_dead_letter(letter: DeadLetter) -> Notification:
    return Notification(
        key=f"dead_letter:{letter.entry_id}",
        kind="dead_letter",
        severity="warning",
        group_key="dead_letter",
        title=f"{letter.group} dead-lettered an entry of {letter.stream}",
        body=(
            f"{letter.reason[:500]}\nRead it with `redis-cli XRANGE cdb:dead_letter "
            f"{letter.entry_id} {letter.entry_id}`; fix the producer, then re-publish it."
        ),
    )


# -- Alertmanager's webhook -----------------------------------------------------------


class AlertmanagerAlert(BaseModel):
    """One alert of Alertmanager's webhook payload (version 4)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    fingerprint: str = Field(min_length=1, max_length=64)


class AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    alerts: list[AlertmanagerAlert] = Field(max_length=10_000)


def from_alertmanager(payload: AlertmanagerPayload) -> list[Notification]:
    """One notification per alert and state: firing and resolved are two causes."""
    out = []
    for alert in payload.alerts:
        name = alert.labels.get("alertname", "alert")
        severity = alert.labels.get("severity", "warning")
        level: Severity = severity if severity in ("info", "warning", "critical") else "warning"  # type: ignore[assignment]
        summary = alert.annotations.get("summary", name)
        where = ", ".join(
            f"{label}={alert.labels[label]}"
            for label in ("job", "instance", "bot", "symbol", "stream")
            if label in alert.labels
        )
        started = alert.startsAt.isoformat(timespec="seconds")
        if alert.status == "resolved":
            title = f"Resolved: {summary}"
            body = f"{name} ({where}) is resolved; it fired since {started}."
            level = "info"
        else:
            title = summary
            description = alert.annotations.get("description", "")
            body = f"{description}\n{name} ({where}), firing since {started}.".strip()
        out.append(
            Notification(
                key=f"alertmanager:{alert.fingerprint}:{alert.status}:{started}",
                kind=f"prometheus:{name}",
                severity=level,
                group_key=f"prometheus:{name}:{alert.status}",
                title=title[:200],
                body=body[:4000],
                bot=alert.labels.get("bot", ""),
                symbol=alert.labels.get("symbol", ""),
            )
        )
    return out


# -- a flood as one message -----------------------------------------------------------


def grouped(items: Sequence[Notification]) -> tuple[str, str]:
    """Title and body of one message standing for several of one group."""
    if len(items) == 1:
        return items[0].title, items[0].body
    first = items[0]
    subjects = sorted({n.symbol or n.bot for n in items if n.symbol or n.bot})
    title = f"{len(items)}x {first.title}"
    if subjects:
        shown = ", ".join(subjects[:20]) + (
            f" and {len(subjects) - 20} more" if len(subjects) > 20 else ""
        )
        body = f"{len(items)} of these, for {shown}.\n\n{first.body}"
    else:
        lines = "\n".join(f"- {n.title}" for n in items[:20])
        more = f"\n- and {len(items) - 20} more" if len(items) > 20 else ""
        body = f"{len(items)} of these:\n{lines}{more}\n\n{first.body}"
    return title[:200], body[:4000]


def daily_summary(
    day: str,
    trades: int,
    closes: int,
    realized_pnl: float,
    fees: float,
    exposure: float,
    open_positions: int,
    breaker_active: bool,
) -> Notification:
    breaker = "TRIPPED (no new positions today)" if breaker_active else "not tripped"
    return Notification(
        key=f"daily:{day}",
        kind="daily_summary",
        severity="info",
        group_key="daily_summary",
        title=f"Daily summary {day}: PnL {realized_pnl - fees:+.2f} USDT",
        body=(
            f"{day} (UTC): {trades} positions opened, {closes} closed, realised PnL "
            f"{realized_pnl:+.2f} USDT, fees {fees:.2f} USDT. Open: {open_positions} "
            f"positions, exposure {exposure:.2f} USDT. Circuit breaker: {breaker}. "
            "Details: `cdb report`."
        ),
    )
