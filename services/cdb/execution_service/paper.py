"""The paper fill model, pure: no I/O, no clock. ``cdb replay`` fills with this same code.

Usage::

    model = PaperFillModel(slippage_bps=5, fees=FeeSchedule())
    fill = model.fill_open(order, market_price)            # entry fill (taker)
    exit_price = model.exit_price_for(position, low=.., high=.., open_=.., last=..,
                                      start=.., end=..)    # None: stop not hit
    close = model.fill_close(position, exit_price)          # with realised PnL

Market orders pay MEXC's USDT-M futures taker fee, 0.02 % of notional by default (maker
0 %; see docs/TRADING_PIPELINE.md for the source). Slippage moves every fill against the
trader by ``slippage_bps``. A stop-loss fills at the stop price, or at the open when the
price gapped through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdb.core.events import Order
from cdb.execution_service.book import Fill, OpenPosition

__all__ = ["FeeSchedule", "PaperFillModel"]

MEXC_FUTURES_TAKER_FEE = 0.0002
MEXC_FUTURES_MAKER_FEE = 0.0


@dataclass(frozen=True)
class FeeSchedule:
    taker_rate: float = MEXC_FUTURES_TAKER_FEE
    maker_rate: float = MEXC_FUTURES_MAKER_FEE


class PaperFillModel:
    def __init__(self, slippage_bps: float = 5.0, fees: FeeSchedule | None = None) -> None:
        self.slippage = slippage_bps / 10_000.0
        self.fees = fees or FeeSchedule()

    def _slipped(self, price: float, buying: bool) -> float:
        return price * (1 + self.slippage) if buying else price * (1 - self.slippage)

    def fill_open(self, order: Order, market_price: float | None) -> Fill:
        """Enter at the latest market price (the order's price if none is known yet)."""
        price = self._slipped(market_price or order.price, buying=order.side == "long")
        return Fill(
            price=price, quantity=order.quantity, fee=price * order.quantity * self.fees.taker_rate
        )

    def stop_exit(
        self, position: OpenPosition, *, low: float, high: float, open_: float | None = None
    ) -> float | None:
        """The price the stop executes at within a bar (or a tick: low == high), or None."""
        reference = open_ if open_ is not None else (high if position.side == "long" else low)
        if position.side == "long":
            if low > position.stop_loss:
                return None
            return min(position.stop_loss, reference)
        if high < position.stop_loss:
            return None
        return max(position.stop_loss, reference)

    def exit_price_for(
        self,
        position: OpenPosition,
        *,
        low: float,
        high: float,
        open_: float | None,
        last: float,
        start: float,
        end: float,
    ) -> float | None:
        """The stop exit a price from ``start`` to ``end`` causes (a bar, or a tick with
        start == end), or None. A bar that began before the position opened counts only
        with its close (``last``): its low and high may be older than the entry."""
        if end < position.opened_at:
            return None
        if start < position.opened_at:
            return self.stop_exit(position, low=last, high=last)
        return self.stop_exit(position, low=low, high=high, open_=open_)

    def fill_close(self, position: OpenPosition, exit_price: float) -> Fill:
        """Leave the position at ``exit_price`` (slipped); PnL is gross, the fee separate."""
        price = self._slipped(exit_price, buying=position.side == "short")
        direction = 1.0 if position.side == "long" else -1.0
        pnl = direction * (price - position.entry_price) * position.quantity
        fee = price * position.quantity * self.fees.taker_rate
        return Fill(price=price, quantity=position.quantity, fee=fee, realized_pnl=pnl)
