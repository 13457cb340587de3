"""The risk rules, pure: no I/O, no clock (``now`` is passed in). ``cdb replay`` runs this too.

Usage::

    book = RiskBook(starting_equity=10_000, limits=RiskLimits())
    decision = book.decide(signal, now)        # Order (exposure reserved) | Rejection
    effect = book.apply_result(order_result, now)  # fills, closes; may trip the breaker

Rules (the seed's): a position is ``max_position_pct`` of equity; total exposure (reserved,
open and unknown positions) stays within ``max_exposure_pct`` of equity; every order carries
a ``stop_loss_pct`` stop; one position per symbol; when the UTC day's loss reaches
``max_daily_loss_pct`` of the day's opening equity the breaker trips and no order passes
until the next UTC day or :meth:`RiskBook.reset_breaker` (which re-bases the day).
Equity = starting equity + realised PnL - fees.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Literal

from cdb.core.events import ControlSettings, Order, OrderResult, Signal, deterministic_id

__all__ = [
    "BookPosition",
    "DayState",
    "RejectReason",
    "Rejection",
    "ResultEffect",
    "RiskBook",
    "RiskLimits",
    "order_id_for",
    "utc_day",
]

RejectReason = Literal["paused", "circuit_breaker", "position_open", "no_equity", "exposure"]
PositionStatus = Literal["reserved", "open", "closed", "released", "unknown"]
ACTIVE: frozenset[str] = frozenset({"reserved", "open", "unknown"})
TOLERANCE = 1e-9


def order_id_for(signal_id: str) -> str:
    """The order id of a signal: deterministic, 32 characters (MEXC's externalOid limit)."""
    return deterministic_id("ord", signal_id)[:32]


def utc_day(timestamp: float) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).date()


@dataclass(frozen=True)
class RiskLimits:
    max_position_pct: float = 10.0
    max_exposure_pct: float = 50.0
    stop_loss_pct: float = 2.0
    max_daily_loss_pct: float = 5.0
    paused: bool = False

    def with_control(self, control: ControlSettings) -> RiskLimits:
        changes: dict[str, object] = {
            name: getattr(control, name)
            for name in (
                "max_position_pct",
                "max_exposure_pct",
                "stop_loss_pct",
                "max_daily_loss_pct",
                "paused",
            )
            if getattr(control, name) is not None
        }
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class BookPosition:
    order_id: str
    signal_id: str
    symbol: str
    side: Literal["long", "short"]
    quantity: float
    notional: float
    entry_price: float
    stop_loss: float
    status: PositionStatus = "reserved"
    fees: float = 0.0
    realized_pnl: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass
class DayState:
    day: dt.date
    opening_equity: float
    breaker_tripped: bool = False
    breaker_reason: str = ""


@dataclass(frozen=True)
class Rejection:
    signal_id: str
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class ResultEffect:
    """What an order result did to the book."""

    applied: bool
    position: BookPosition | None = None
    equity_delta: float = 0.0
    breaker_tripped: bool = False


@dataclass
class RiskBook:
    """Equity, positions and the day's breaker; every change goes through a method."""

    starting_equity: float
    limits: RiskLimits = field(default_factory=RiskLimits)
    net_pnl: float = 0.0
    positions: dict[str, BookPosition] = field(default_factory=dict)
    today: DayState | None = None
    applied: set[str] = field(default_factory=set)
    # Active positions summarised instead of listed (a service loads only the ones a
    # decision touches); a replay keeps every position in ``positions`` and leaves these 0.
    other_exposure: float = 0.0
    other_open: int = 0

    @property
    def equity(self) -> float:
        return self.starting_equity + self.net_pnl

    @property
    def exposure(self) -> float:
        return self.other_exposure + sum(p.notional for p in self.positions.values() if p.active)

    @property
    def open_positions(self) -> int:
        return self.other_open + sum(1 for p in self.positions.values() if p.active)

    def daily_pnl(self) -> float:
        return 0.0 if self.today is None else self.equity - self.today.opening_equity

    def roll_day(self, now: float) -> DayState:
        """Today's state; a new UTC day opens at the current equity with the breaker off."""
        day = utc_day(now)
        if self.today is None or self.today.day != day:
            self.today = DayState(day=day, opening_equity=self.equity)
        return self.today

    def check_breaker(self, now: float) -> bool:
        """Trip the breaker when the day's loss reached the limit; True if it tripped now."""
        today = self.roll_day(now)
        if today.breaker_tripped:
            return False
        limit = today.opening_equity * self.limits.max_daily_loss_pct / 100.0
        loss = -self.daily_pnl()
        if loss + TOLERANCE * max(1.0, today.opening_equity) >= limit:
            today.breaker_tripped = True
            today.breaker_reason = (
                f"daily loss {loss:.2f} USDT reached {self.limits.max_daily_loss_pct:g}% "
                f"of opening equity {today.opening_equity:.2f} USDT"
            )
            return True
        return False

    def reset_breaker(self, now: float) -> DayState:
        """An explicit reset: the breaker is off and the day is re-based at current equity."""
        today = self.roll_day(now)
        self.today = DayState(day=today.day, opening_equity=self.equity)
        return self.today

    def decide(self, signal: Signal, now: float) -> Order | Rejection:
        """Approve (and reserve the exposure) or reject, with the reason."""
        today = self.roll_day(now)
        if self.limits.paused:
            return Rejection(signal.signal_id, "paused", "trading is paused")
        if today.breaker_tripped or self.check_breaker(now):
            return Rejection(signal.signal_id, "circuit_breaker", today.breaker_reason)
        if any(p.active and p.symbol == signal.symbol for p in self.positions.values()):
            return Rejection(
                signal.signal_id, "position_open", f"{signal.symbol} already has a position"
            )
        equity = self.equity
        if equity <= 0:
            return Rejection(signal.signal_id, "no_equity", f"equity {equity:.2f} USDT")
        notional = equity * self.limits.max_position_pct / 100.0
        cap = equity * self.limits.max_exposure_pct / 100.0
        exposure = self.exposure
        if exposure + notional > cap + TOLERANCE * cap:
            return Rejection(
                signal.signal_id,
                "exposure",
                f"exposure {exposure:.2f} + {notional:.2f} USDT would exceed "
                f"{self.limits.max_exposure_pct:g}% of equity ({cap:.2f} USDT)",
            )
        stop_factor = self.limits.stop_loss_pct / 100.0
        stop = signal.price * (1 - stop_factor if signal.side == "long" else 1 + stop_factor)
        order_id = order_id_for(signal.signal_id)
        order = Order(
            event_id=order_id,
            order_id=order_id,
            signal_id=signal.signal_id,
            symbol=signal.symbol,
            side=signal.side,
            quantity=notional / signal.price,
            notional=notional,
            price=signal.price,
            stop_loss=stop,
            timestamp=now,
        )
        self.positions[order_id] = BookPosition(
            order_id=order_id,
            signal_id=signal.signal_id,
            symbol=signal.symbol,
            side=signal.side,
            quantity=order.quantity,
            notional=notional,
            entry_price=signal.price,
            stop_loss=stop,
        )
        return order

    def apply_result(self, result: OrderResult, now: float) -> ResultEffect:
        """Fills open, closes realise, rejections release. Idempotent per (order, status)."""
        key = f"{result.order_id}:{result.status}"
        position = self.positions.get(result.order_id)
        if key in self.applied or position is None:
            return ResultEffect(applied=False, position=position)
        self.applied.add(key)
        self.roll_day(now)  # the day opens before this result changes equity
        delta = 0.0
        if result.status == "filled":
            if position.status in ("reserved", "unknown"):
                position.status = "open"
                position.entry_price = result.fill_price or position.entry_price
                position.quantity = result.quantity or position.quantity
                position.notional = position.entry_price * position.quantity
            position.fees += result.fee
            delta = -result.fee
        elif result.status == "closed":
            position.status = "closed"
            position.fees += result.fee
            position.realized_pnl += result.realized_pnl
            delta = result.realized_pnl - result.fee
        elif result.status == "rejected":
            if position.status in ("reserved", "unknown"):
                position.status = "released"
        elif result.status == "unknown" and position.status == "reserved":
            position.status = "unknown"
        self.net_pnl += delta
        tripped = self.check_breaker(now) if delta < 0 else False
        return ResultEffect(
            applied=True, position=position, equity_delta=delta, breaker_tripped=tripped
        )
