"""The risk rules as pure functions (the code ``cdb replay`` runs too)."""

from __future__ import annotations

import datetime as dt

import pytest

from cdb.core.events import Order, OrderResult, Signal
from cdb.risk_manager.rules import Rejection, RiskBook, RiskLimits, order_id_for

DAY = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC).timestamp()


def signal(symbol: str, price: float = 100.0, side: str = "long") -> Signal:
    sid = f"sig-{symbol}-{side}"
    return Signal(
        event_id=sid,
        signal_id=sid,
        symbol=symbol,
        side=side,
        confidence=0.5,  # type: ignore[arg-type]
        reason="test",
        price=price,
        pct_change=5.0,
        timestamp=DAY,
    )


def result(order: Order, status: str, *, pnl: float = 0.0, fee: float = 0.0) -> OrderResult:
    return OrderResult(
        order_id=order.order_id,
        symbol=order.symbol,
        side=order.side,
        status=status,  # type: ignore[arg-type]
        fill_price=order.price,
        quantity=order.quantity,
        fee=fee,
        realized_pnl=pnl,
        timestamp=DAY,
    )


def approve(book: RiskBook, symbol: str, now: float = DAY) -> Order:
    decision = book.decide(signal(symbol), now)
    assert isinstance(decision, Order), decision
    return decision


def test_an_order_is_ten_percent_of_equity_with_a_two_percent_stop() -> None:
    book = RiskBook(starting_equity=10_000.0)
    order = approve(book, "AAA_USDT")
    assert order.notional == pytest.approx(1_000.0)
    assert order.quantity == pytest.approx(10.0)
    assert order.stop_loss == pytest.approx(98.0)
    assert order.order_id == order_id_for(order.signal_id) == order.event_id
    assert len(order.order_id) <= 32
    short = book.decide(signal("BBB_USDT", 50.0, "short"), DAY)
    assert isinstance(short, Order) and short.stop_loss == pytest.approx(51.0)


def test_exposure_never_exceeds_fifty_percent() -> None:
    book = RiskBook(starting_equity=10_000.0)
    decisions = [book.decide(signal(f"S{i}_USDT"), DAY) for i in range(8)]
    approved = [d for d in decisions if isinstance(d, Order)]
    assert len(approved) == 5
    assert {d.reason for d in decisions if isinstance(d, Rejection)} == {"exposure"}
    assert book.exposure == pytest.approx(5_000.0)
    # a rejection releases nothing; a rejected *order* releases its reservation
    book.apply_result(result(approved[0], "rejected"), DAY)
    assert isinstance(book.decide(signal("NEW_USDT"), DAY), Order)


def test_one_position_per_symbol() -> None:
    book = RiskBook(starting_equity=10_000.0)
    approve(book, "AAA_USDT")
    again = book.decide(signal("AAA_USDT", 101.0, "short"), DAY)
    assert isinstance(again, Rejection) and again.reason == "position_open"


def test_the_breaker_trips_at_exactly_the_configured_daily_loss() -> None:
    book = RiskBook(starting_equity=10_000.0, limits=RiskLimits(max_daily_loss_pct=5.0))
    losses = [-300.0, -199.99]
    for i, loss in enumerate(losses):
        order = approve(book, f"L{i}_USDT")
        book.apply_result(result(order, "filled"), DAY)
        effect = book.apply_result(result(order, "closed", pnl=loss), DAY)
        assert not effect.breaker_tripped
    assert book.daily_pnl() == pytest.approx(-499.99)
    last = approve(book, "L9_USDT")  # 0.01 USDT short of the limit: still trading
    book.apply_result(result(last, "filled"), DAY)
    effect = book.apply_result(result(last, "closed", pnl=-0.01), DAY)
    assert effect.breaker_tripped and book.today is not None and book.today.breaker_tripped
    assert "5%" in book.today.breaker_reason
    refused = book.decide(signal("LATE_USDT"), DAY + 60)
    assert isinstance(refused, Rejection) and refused.reason == "circuit_breaker"
    # the next UTC day opens at the current equity with the breaker off
    tomorrow = DAY + 24 * 3600
    assert isinstance(book.decide(signal("NEXT_USDT"), tomorrow), Order)
    assert book.today.opening_equity == pytest.approx(9_500.0)


def test_fees_count_toward_the_daily_loss_and_reset_rebases_the_day() -> None:
    book = RiskBook(starting_equity=1_000.0, limits=RiskLimits(max_daily_loss_pct=1.0))
    order = approve(book, "FEE_USDT")
    effect = book.apply_result(result(order, "filled", fee=10.0), DAY)
    assert effect.breaker_tripped and book.equity == pytest.approx(990.0)
    today = book.reset_breaker(DAY)
    assert not today.breaker_tripped and today.opening_equity == pytest.approx(990.0)
    assert isinstance(book.decide(signal("AFTER_USDT"), DAY), Order)


def test_results_apply_once_per_order_and_status_in_any_order() -> None:
    book = RiskBook(starting_equity=10_000.0)
    order = approve(book, "DUP_USDT")
    closed = result(order, "closed", pnl=25.0, fee=0.2)
    filled = result(order, "filled", fee=0.2)
    for event in (closed, filled, closed, filled):  # close overtakes the fill, then replays
        book.apply_result(event, DAY)
    assert book.equity == pytest.approx(10_000.0 + 25.0 - 0.4)
    assert book.positions[order.order_id].status == "closed"
    assert book.exposure == 0.0


def test_paused_rejects() -> None:
    book = RiskBook(starting_equity=10_000.0, limits=RiskLimits(paused=True))
    decision = book.decide(signal("P_USDT"), DAY)
    assert isinstance(decision, Rejection) and decision.reason == "paused"


def test_the_status_shows_the_newest_committed_book_whatever_order_it_arrives_in() -> None:
    """risk_manager's consumers commit in book-version order (the book lock) but show their
    book after the commit, in any order: a signal's view (its order reserved at the signal
    price) arriving after the fill's view (the filled notional) must not win. Seen in a
    SIGKILL burst: /status exposure 3981.035737 against 3981.041737 in the books."""
    from prometheus_client import CollectorRegistry

    from cdb.risk_manager.rules import BookPosition
    from cdb.risk_manager.service import RiskManager, RiskMetrics

    def book(notional: float, status: str) -> RiskBook:
        position = BookPosition(
            "o-1",
            "s-1",
            "PUMP_USDT",
            "long",
            10.0,
            notional,
            notional / 10,
            1.0,
            status,  # type: ignore[arg-type]
        )
        return RiskBook(starting_equity=10_000.0, limits=RiskLimits(), positions={"o-1": position})

    registry = CollectorRegistry()
    manager = RiskManager.__new__(RiskManager)  # only what _show uses, no bus or database
    manager.metrics, manager.summary, manager.pending = RiskMetrics(registry), {}, 0
    manager.shown_version = -1
    reserved, filled = book(20.0, "reserved"), book(20.006, "open")
    manager._show(filled, 8)  # the fill's transaction, version 8, shows first
    manager._show(reserved, 7)  # the signal's, version 7, committed before it, shows late
    assert manager.summary["exposure_usdt"] == 20.006
    assert registry.get_sample_value("risk_exposure_usdt") == 20.006
