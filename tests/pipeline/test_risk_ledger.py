"""risk_manager's book in memory (``ledger.py``) decides exactly as one whole book does: a
random run of signals, fills, closes, rejections and unknowns, each decided on a view of
the ledger and folded back, against the replay's book that lists every position."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from cdb.core.events import OrderResult, Signal
from cdb.risk_manager.ledger import Ledger
from cdb.risk_manager.rules import Rejection, RiskBook, RiskLimits

DAY = 1_780_000_000.0
LIMITS = RiskLimits(max_position_pct=5.0, max_exposure_pct=40.0, max_daily_loss_pct=3.0)


def signal(n: int, symbol: str, price: float) -> Signal:
    return Signal(
        event_id=f"s{n}",
        signal_id=f"s{n}",
        symbol=symbol,
        side="long",
        price=price,
        confidence=0.5,
        reason="test",
        pct_change=5.0,
        timestamp=DAY,
    )


def result(order_id: str, status: str, rng: random.Random, price: float) -> OrderResult:
    closed = status == "closed"
    return OrderResult(
        event_id=f"{order_id}:{status}",
        order_id=order_id,
        signal_id="s",
        symbol="X_USDT",
        side="long",
        status=status,  # type: ignore[arg-type]
        quantity=1.0 if status == "filled" else 0.0,
        fill_price=price * rng.uniform(0.99, 1.01) if status == "filled" else 0.0,
        fee=rng.uniform(0, 0.5) if status in ("filled", "closed") else 0.0,
        realized_pnl=rng.uniform(-60, 40) if closed else 0.0,
        timestamp=DAY,
    )


@pytest.mark.parametrize("seed", range(12))
def test_views_folded_into_the_ledger_decide_as_the_whole_book(seed: int) -> None:
    rng = random.Random(seed)
    whole = RiskBook(starting_equity=10_000.0, limits=LIMITS)
    ledger = Ledger(starting_equity=10_000.0)
    orders: list[str] = []
    seen: set[tuple[str, str]] = set()
    now = DAY
    for n in range(400):
        now += rng.uniform(0, 600)  # crosses UTC days now and then
        if orders and rng.random() < 0.55:
            order_id = rng.choice(orders)
            status = rng.choice(["filled", "filled", "closed", "rejected", "unknown"])
            event = result(order_id, status, rng, 10.0)
            # the row as stored before this result (what store.load_position reads)
            stored = ledger.positions.get(order_id) or replace(whole.positions[order_id])
            expected = whole.apply_result(event, now)
            if (order_id, status) in seen:  # the service finds its equity row: no effect
                assert not expected.applied
                continue
            seen.add((order_id, status))
            view = ledger.view(LIMITS, row=stored)
            got = view.apply_result(event, now)
            assert (got.applied, got.equity_delta, got.breaker_tripped) == (
                expected.applied,
                expected.equity_delta,
                expected.breaker_tripped,
            )
        else:
            sig = signal(n, f"S{rng.randrange(25)}_USDT", rng.uniform(1, 100))
            expected_decision = whole.decide(sig, now)
            view = ledger.view(LIMITS, symbol=sig.symbol)
            decision = view.decide(sig, now)
            if isinstance(expected_decision, Rejection):
                assert isinstance(decision, Rejection)
                assert decision.reason == expected_decision.reason
            else:
                assert decision == expected_decision
                orders.append(decision.order_id)
        # what the service reports and writes (equity rows, metrics, approval requests)
        assert view.exposure == pytest.approx(whole.exposure, abs=1e-6)
        assert view.open_positions == whole.open_positions
        assert view.equity == pytest.approx(whole.equity, abs=1e-9)
        ledger.fold(view)
        assert ledger.net_pnl == pytest.approx(whole.net_pnl, abs=1e-9)
        assert ledger.exposure == pytest.approx(whole.exposure, abs=1e-6)
        assert len(ledger.positions) == whole.open_positions
        assert ledger.today == whole.today
        assert {p.order_id: p for p in whole.positions.values() if p.active} == ledger.positions
