"""The per-candle path computes exactly what the batch path and the model itself give.

Live, the advisor computes only the newest bar's features (:func:`newest_features`, from
the window's numpy columns), scores the row on an unnamed one-row ``DMatrix`` and runs
TreeSHAP only for a prediction that passes the gate. These tests hold that path to the
full computation bit for bit: ``window_features`` over the whole window, and the model's
own ``predict`` on a named ``DMatrix`` of the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdb.core.events import Candle
from cdb.ml_advisor.decision import Decider
from cdb.ml_advisor.features import WARMUP_BARS, newest_features, window_features
from cdb.ml_advisor.gating import Suppression
from cdb.ml_advisor.inference import Predictor
from cdb.ml_advisor.live_state import Accepted, CandleWindow
from cdb.ml_advisor.model_store import load_model, save_artifact
from cdb.ml_advisor.synthetic import generate_history
from cdb.ml_advisor.training import TrainingConfig, train_model

SYMBOL = "LIVE_USDT"


def _columns(window: CandleWindow) -> tuple[np.ndarray, ...]:  # type: ignore[type-arg]
    """The window's bars as arrays, the way the live path computed them before."""
    bars = list(window.bars)
    return tuple(
        np.array([getattr(bar, name) for bar in bars], dtype=np.float64)
        for name in ("close", "high", "low", "turnover")
    )


def _full_row(window: CandleWindow, rank: float) -> np.ndarray:  # type: ignore[type-arg]
    close, high, low, turnover = _columns(window)
    ranks = np.zeros(len(close))
    ranks[-1] = rank
    row: np.ndarray = window_features(close, high, low, turnover, ranks)[-1]  # type: ignore[type-arg]
    return row


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-6, 1e5),
    volatility=st.floats(0.0, 0.05),
    zero_turnover=st.integers(0, WARMUP_BARS),
    flat_tail=st.integers(0, 70),
    rank=st.sampled_from([0.0, 0.2, 0.6, -0.4, -1.0, 1.0]),
)
def test_newest_features_are_exactly_the_last_row_of_the_window_computation(
    seed: int, scale: float, volatility: float, zero_turnover: int, flat_tail: int, rank: float
) -> None:
    rng = np.random.default_rng(seed)
    n = WARMUP_BARS
    close = scale * np.exp(np.cumsum(rng.normal(0.0, volatility, n)))
    high = close * (1.0 + rng.uniform(0.0, 0.01, n))
    low = close * (1.0 - rng.uniform(0.0, 0.01, n))
    turnover = rng.lognormal(rng.uniform(0.0, 15.0), 1.5, n)
    turnover[rng.choice(n, zero_turnover, replace=False)] = 0.0
    if flat_tail:  # a quiet market: no range, no volatility (the 0.5 and 0.0 branches)
        close[-flat_tail:] = high[-flat_tail:] = low[-flat_tail:] = close[-flat_tail]
    ranks = np.zeros(n)
    ranks[-1] = rank
    expected = window_features(close, high, low, turnover, ranks)[-1]
    actual = newest_features(close, high, low, turnover, rank)
    assert np.array_equal(actual, expected, equal_nan=True), actual - expected


def test_newest_features_wants_exactly_one_window() -> None:
    bars = np.ones(WARMUP_BARS - 1)
    with pytest.raises(ValueError, match=f"exactly {WARMUP_BARS} bars, got {WARMUP_BARS - 1}"):
        newest_features(bars, bars, bars, bars, 0.0)


def _candles(minutes: int, seed: int) -> list[Candle]:
    history = generate_history(symbols=1, minutes=minutes, seed=seed)
    return [
        Candle(
            symbol=SYMBOL,
            open_time=int(r.time),
            open=float(r.open),
            high=float(r.high),
            low=float(r.low),
            close=float(r.close),
            volume=float(r.vol),
            turnover=float(r.amount),
        )
        for r in history.itertuples(index=False)
    ]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    events=st.lists(
        st.tuples(st.integers(0, 499), st.sampled_from(["drop", "replace", "stale", "gap"])),
        max_size=30,
    ),
)
def test_the_live_window_gives_exactly_the_full_computation_through_gaps_and_updates(
    seed: int, events: list[tuple[int, str]]
) -> None:
    """Missing minutes (filled flat), the same bar again, a stale bar and a gap longer
    than the window (a restart): the columns follow the bars exactly."""
    what = dict(events)
    window = CandleWindow()
    compared = 0
    shift = 0
    for index, original in enumerate(_candles(500, seed)):
        action = what.get(index)
        if action == "drop":
            continue
        if action == "gap":
            shift += 60 * (WARMUP_BARS + 5)
        candle = original.model_copy(update={"open_time": original.open_time + shift})
        if action == "replace":
            window.add(candle.model_copy(update={"close": candle.close * 1.01}))
        accepted = window.add(candle)
        if action == "stale" and window.last_open_time is not None:
            older = candle.model_copy(update={"open_time": window.last_open_time - 120})
            assert window.add(older) is Accepted.STALE
        assert accepted is not Accepted.STALE
        if window.ready:
            rank = (index % 11 - 5) / 5
            assert np.array_equal(window.features(rank), _full_row(window, rank), equal_nan=True)
            compared += 1
    assert compared > 0


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    history = generate_history(symbols=4, minutes=1440, seed=11)
    trained = train_model(history, TrainingConfig(seed=3, num_boost_round=40, folds=2))
    directory: Path = tmp_path_factory.mktemp("models")
    save_artifact(directory, trained.manifest, trained.booster)
    return Predictor(load_model(directory))


def test_per_candle_decisions_are_the_models_own_predictions(predictor: Predictor) -> None:
    """Every candle through the live path (window → newest features → checks → unnamed
    one-row DMatrix → gate → TreeSHAP for a pass) against the whole history computed at
    once: ``window_features`` over all bars and the booster's ``predict`` on one named
    DMatrix of those rows. Same features, margins, gate outcomes, confidences and SHAP."""
    candles = _candles(WARMUP_BARS + 700, seed=23)
    close, high, low, turnover = (
        np.array([getattr(c, name) for c in candles], dtype=np.float64)
        for name in ("close", "high", "low", "turnover")
    )
    rows = window_features(close, high, low, turnover, np.zeros(len(candles)))
    rows = rows[WARMUP_BARS - 1 :]
    matrix = xgb.DMatrix(rows, feature_names=predictor.names)
    booster = predictor.model.booster
    margins = np.asarray(booster.predict(matrix, output_margin=True), np.float64)
    probabilities = booster.predict(matrix)
    contributions = np.asarray(booster.predict(matrix, pred_contribs=True), np.float64)
    confidences = 1.0 / (1.0 + np.exp(-margins))
    threshold = float(np.quantile(confidences, 0.8))  # both branches, many of each

    decider = Decider(predictor, outlier_span=10.0, top_features=4)
    window = CandleWindow()
    passed = index = 0
    for candle in candles:
        window.add(candle)
        if not window.ready:
            continue
        decision = decider.decide(candle, window, 0.0, threshold=threshold, enabled=True)
        assert np.array_equal(decision.row, rows[index])
        assert decision.predicted, decision
        scored = predictor.predict(decision.row)
        assert scored.margin == margins[index]
        assert scored.confidence == float(confidences[index])
        assert scored.confidence == pytest.approx(float(probabilities[index]), abs=1e-6)
        if confidences[index] > threshold:
            signal = decision.signal
            assert signal is not None and decision.suppressed is None
            assert signal.confidence == round(float(confidences[index]), 6)
            order = np.argsort(-np.abs(contributions[index, :-1]), kind="stable")[:4]
            assert [(f.feature, f.value, f.contribution) for f in signal.top_features] == [
                (predictor.names[k], rows[index, k], contributions[index, k]) for k in order
            ]
            explained = scored.explain()
            assert np.array_equal(explained.contributions, contributions[index, :-1])
            assert explained.bias == contributions[index, -1]
            passed += 1
        else:
            assert decision.signal is None
            assert decision.suppressed is Suppression.BELOW_THRESHOLD
        index += 1
    assert index == len(rows) and 0 < passed < index
