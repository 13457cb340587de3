"""The paper fill model as pure functions (the code ``cdb replay`` fills with)."""

from __future__ import annotations

import pytest

from cdb.core.events import Order
from cdb.execution_service.book import OpenPosition
from cdb.execution_service.paper import FeeSchedule, PaperFillModel


def order(side: str = "long", price: float = 100.0, quantity: float = 10.0) -> Order:
    return Order(
        order_id="o",
        signal_id="s",
        symbol="X_USDT",
        side=side,
        quantity=quantity,  # type: ignore[arg-type]
        notional=price * quantity,
        price=price,
        stop_loss=98.0 if side == "long" else 102.0,
        timestamp=0.0,
    )


def position(side: str = "long", stop: float = 98.0) -> OpenPosition:
    return OpenPosition("o", "X_USDT", side, 10.0, 100.0, stop, 0.0)  # type: ignore[arg-type]


def test_entries_pay_slippage_and_the_mexc_taker_fee() -> None:
    model = PaperFillModel(slippage_bps=10)
    assert FeeSchedule().taker_rate == 0.0002 and FeeSchedule().maker_rate == 0.0
    long = model.fill_open(order("long"), market_price=101.0)
    assert long.price == pytest.approx(101.0 * 1.001)  # a buy fills higher
    assert long.fee == pytest.approx(long.price * 10 * 0.0002)
    short = model.fill_open(order("short"), market_price=None)  # no price yet: the order's
    assert short.price == pytest.approx(100.0 * 0.999)


def test_stops_fill_at_the_stop_or_at_the_open_of_a_gap() -> None:
    model = PaperFillModel(slippage_bps=0)
    assert model.stop_exit(position(), low=98.5, high=101.0, open_=100.0) is None
    assert model.stop_exit(position(), low=97.0, high=100.0, open_=99.0) == 98.0
    assert model.stop_exit(position(), low=95.0, high=97.5, open_=97.0) == 97.0  # gapped
    assert model.stop_exit(position(), low=97.9, high=97.9) == 97.9  # a tick
    short = position("short", stop=102.0)
    assert model.stop_exit(short, low=99.0, high=101.9, open_=100.0) is None
    assert model.stop_exit(short, low=100.0, high=103.0, open_=101.0) == 102.0
    assert model.stop_exit(short, low=103.0, high=104.0, open_=103.5) == 103.5


def test_closes_realise_pnl_with_slippage_and_fee() -> None:
    model = PaperFillModel(slippage_bps=10)
    close = model.fill_close(position(), 98.0)
    assert close.price == pytest.approx(98.0 * 0.999)  # a sell fills lower
    assert close.realized_pnl == pytest.approx((close.price - 100.0) * 10)
    assert close.fee == pytest.approx(close.price * 10 * 0.0002)
    short = model.fill_close(position("short", 102.0), 102.0)
    assert short.realized_pnl == pytest.approx((100.0 - 102.0 * 1.001) * 10)
