"""Features: one implementation for training and live, no look-ahead, clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdb.core.events import Candle, MarketData
from cdb.ml_advisor.candle_history import HistoryError, load_history_file, validate_history
from cdb.ml_advisor.dataset import build_dataset
from cdb.ml_advisor.features import FEATURES, WARMUP_BARS, mover_rank
from cdb.ml_advisor.live_state import Accepted, CandleWindow, MoversBoard
from cdb.ml_advisor.synthetic import generate_history

RANK = FEATURES.index("mover_rank")


def _candle(row: pd.Series) -> Candle:  # type: ignore[type-arg]
    return Candle(
        symbol=str(row["symbol"]),
        open_time=int(row["time"]),
        open=float(row["open"]),
        high=float(row["high"]),
        low=float(row["low"]),
        close=float(row["close"]),
        volume=float(row["vol"]),
        turnover=float(row["amount"]),
    )


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), drop=st.lists(st.integers(0, 399), max_size=25))
def test_the_live_window_computes_exactly_the_training_features(seed: int, drop: list[int]) -> None:
    history = generate_history(symbols=1, minutes=400, seed=seed)
    kept = history.drop(index=[i for i in set(drop) if 0 < i < 399]).reset_index(drop=True)
    batch = build_dataset(kept).set_index("time")
    window = CandleWindow()
    compared = 0
    for _, row in kept.iterrows():
        assert window.add(_candle(row)) is Accepted.APPENDED
        if not window.ready:
            continue
        live = window.features(rank=float(batch.loc[int(row["time"]), "mover_rank"]))
        expected = batch.loc[int(row["time"]), list(FEATURES)].to_numpy(np.float64)
        np.testing.assert_allclose(live, expected, rtol=1e-9, atol=1e-12)
        compared += 1
    assert compared == int((~batch["filled"]).sum()) > 0


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(WARMUP_BARS + 5, 350))
def test_features_never_look_ahead(seed: int, cut: int) -> None:
    """Changing every bar after ``cut`` changes no feature at or before it."""
    history = generate_history(symbols=3, minutes=400, seed=seed)
    future = history["time"] > history["time"].min() + 60 * cut
    altered = history.copy()
    altered.loc[future, ["open", "close", "high", "low"]] *= 1.5
    altered.loc[future, "amount"] *= 10
    original = build_dataset(history)
    changed = build_dataset(altered)
    upto = original["time"] <= history["time"].min() + 60 * cut
    pd.testing.assert_frame_equal(
        original.loc[upto, list(FEATURES)], changed.loc[upto, list(FEATURES)]
    )
    # the label does look ahead, by design: that is what the embargo in training is for
    assert not np.allclose(
        original.loc[upto, "fwd_return_pct"].dropna(), changed.loc[upto, "fwd_return_pct"].dropna()
    )


def test_mover_rank_scores_gainers_and_losers() -> None:
    movers = {"A_USDT": 9.0, "B_USDT": 7.0, "C_USDT": 5.0, "D_USDT": -8.0, "E_USDT": -3.0}
    assert mover_rank("A_USDT", movers) == 1.0
    assert mover_rank("C_USDT", movers) == pytest.approx(0.6)
    assert mover_rank("D_USDT", movers) == -1.0
    assert mover_rank("E_USDT", movers) == pytest.approx(-0.8)
    assert mover_rank("Z_USDT", movers) == 0.0
    six = {f"S{i}_USDT": float(10 - i) for i in range(6)}
    assert mover_rank("S5_USDT", six) == 0.0  # sixth gainer is no mover


def test_movers_board_uses_the_snapshot_of_the_bar() -> None:
    board = MoversBoard(max_age_s=180)
    for symbol, change in (("A_USDT", 4.0), ("B_USDT", 6.0)):
        board.add(
            MarketData(symbol=symbol, price=1.0, volume=1.0, pct_change=change, timestamp=1060)
        )
    assert board.rank("B_USDT", 1000) == 1.0
    assert board.rank("A_USDT", 1000) == pytest.approx(0.8)
    assert board.rank("A_USDT", 5000) == 0.0  # snapshot too old for that bar
    # the next minute's movers (A on top now) are not this bar's: no look-ahead
    board.add(MarketData(symbol="A_USDT", price=1.0, volume=1.0, pct_change=9.0, timestamp=1120))
    assert board.rank("A_USDT", 1000) == pytest.approx(0.8)
    assert board.rank("A_USDT", 1060) == 1.0


def test_window_fills_short_gaps_restarts_after_long_ones_and_skips_stale_bars() -> None:
    window = CandleWindow(size=10)

    def bar(at: int, close: float = 100.0) -> Candle:
        return Candle(
            symbol="A_USDT",
            open_time=at,
            open=close,
            high=close,
            low=close,
            close=close,
            volume=1.0,
            turnover=10.0,
        )

    assert window.add(bar(0)) is Accepted.APPENDED
    assert window.add(bar(180)) is Accepted.APPENDED  # two missing minutes filled
    assert [b.open_time for b in window.bars] == [0, 60, 120, 180]
    assert [b.turnover for b in window.bars] == [10.0, 0.0, 0.0, 10.0]
    assert window.add(bar(60)) is Accepted.STALE
    assert window.add(bar(180, 101.0)) is Accepted.REPLACED
    assert window.bars[-1].close == 101.0
    assert window.add(bar(180 + 60 * 11)) is Accepted.RESTARTED
    assert len(window.bars) == 1


def _frame(**changes: object) -> pd.DataFrame:
    base = {
        "symbol": ["A_USDT", "A_USDT"],
        "time": [60, 120],
        "open": [1.0, 1.0],
        "close": [1.0, 1.1],
        "high": [1.2, 1.2],
        "low": [0.9, 0.9],
        "vol": [10.0, 10.0],
        "amount": [10.0, 11.0],
    }
    base.update(changes)  # type: ignore[arg-type]
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_frame().drop(columns=["amount"]), "missing column(s) amount"),
        (_frame(high=[0.5, 1.2]), "high < low"),
        (_frame(time=[60, 60]), "duplicate bar"),
        (_frame(time=[61, 121]), "whole minutes"),
        (_frame(close=["x", 1.0]), "non-numeric"),
        (_frame(open=[-1.0, 1.0]), "prices must be > 0"),
    ],
)
def test_bad_histories_are_refused_with_the_reason(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(HistoryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_history(frame, "test")


def test_history_files_round_trip_in_mexc_layout(tmp_path: Path) -> None:
    history = generate_history(symbols=2, minutes=30, seed=1)
    history.to_csv(tmp_path / "h.csv", index=False)
    history.to_parquet(tmp_path / "h.parquet", index=False)
    pd.testing.assert_frame_equal(load_history_file(tmp_path / "h.csv"), history)
    pd.testing.assert_frame_equal(load_history_file(tmp_path / "h.parquet"), history)
    with pytest.raises(HistoryError, match="no such file"):
        load_history_file(tmp_path / "missing.csv")
    (tmp_path / "h.json").write_text("{}")
    with pytest.raises(HistoryError, match="unknown format"):
        load_history_file(tmp_path / "h.json")
