"""What every venue, the store and ``cdb replay`` share: a fill, an open position, and
the ``order_result`` events built from them. Pure data, no I/O.

Usage::

    order_result(order, "filled", fill, "", "paper", at)    # what became of an order
    closed_result(position, close, at)                      # a position closed at its stop
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cdb.core.events import Order, OrderResult, OrderStatus, TradingMode

__all__ = ["Fill", "OpenPosition", "closed_result", "order_result"]


@dataclass(frozen=True)
class Fill:
    price: float
    quantity: float
    fee: float
    realized_pnl: float = 0.0

    @property
    def notional(self) -> float:
        return self.price * self.quantity


@dataclass(frozen=True)
class OpenPosition:
    order_id: str
    symbol: str
    side: Literal["long", "short"]
    quantity: float
    entry_price: float
    stop_loss: float
    opened_at: float


def order_result(
    order: Order, status: OrderStatus, fill: Fill | None, reason: str, mode: TradingMode, at: float
) -> OrderResult:
    """What became of ``order``; its event id is derived, so a retry re-emits the same one."""
    return OrderResult(
        event_id=f"{order.order_id}:{status}",
        order_id=order.order_id,
        signal_id=order.signal_id,
        symbol=order.symbol,
        side=order.side,
        status=status,
        fill_price=fill.price if fill else 0.0,
        quantity=fill.quantity if fill else 0.0,
        fee=fill.fee if fill else 0.0,
        reason=reason[:500],
        mode=mode,
        timestamp=at,
    )


def closed_result(
    position: OpenPosition,
    fill: Fill,
    at: float,
    reason: str = "",
    mode: TradingMode = "paper",
) -> OrderResult:
    """A position closed (at its stop, unless ``reason`` says otherwise)."""
    return OrderResult(
        event_id=f"{position.order_id}:closed",
        order_id=position.order_id,
        symbol=position.symbol,
        side=position.side,
        status="closed",
        fill_price=fill.price,
        quantity=fill.quantity,
        fee=fill.fee,
        realized_pnl=fill.realized_pnl,
        reason=(reason or f"stop-loss {position.stop_loss:g} hit")[:500],
        mode=mode,
        timestamp=at,
    )
