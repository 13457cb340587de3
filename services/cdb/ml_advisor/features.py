"""The model's features, computed from 1-minute candles by one function for training and live.

Every feature at bar ``i`` uses bars ``i - WARMUP_BARS + 1 … i`` only (no look-ahead):

* ``ret_1m``, ``ret_5m``, ``ret_15m``, ``ret_60m`` — close-to-close returns in percent;
* ``turnover_15m_log`` — log10 of the 15-minute window turnover (USDT), the rule's volume;
* ``volume_z_15m`` — the 15-minute mean turnover per minute as a z-score against the last
  two hours' per-minute turnover;
* ``volatility_15m``, ``volatility_60m`` — standard deviation of 1-minute log returns, percent;
* ``range_pos_60m`` — where the close sits in the last hour's high-low range (0 … 1);
* ``bar_range_pct`` — the last bar's high-low range in percent of its close;
* ``mover_rank`` — the symbol's place among the screener's movers: +1.0 top gainer … +0.2
  fifth gainer, -0.2 … -1.0 for losers, 0 when it is not a mover.

:func:`window_features` is the definition; the batch path (training, evaluation) calls it.
The live path needs one row per closed candle, the newest: :func:`newest_features` computes
just that row with the same numpy operations on the same bars (a test holds it to exactly
``window_features(...)[-1]``), instead of every row of the window and keeping the last.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

__all__ = [
    "FEATURES",
    "MOVERS_PER_SIDE",
    "WARMUP_BARS",
    "mover_rank",
    "newest_features",
    "window_features",
]

FloatArray = NDArray[np.float64]

FEATURES: tuple[str, ...] = (
    "ret_1m",
    "ret_5m",
    "ret_15m",
    "ret_60m",
    "turnover_15m_log",
    "volume_z_15m",
    "volatility_15m",
    "volatility_60m",
    "range_pos_60m",
    "bar_range_pct",
    "mover_rank",
)

VOLUME_REFERENCE_BARS = 120
WARMUP_BARS = VOLUME_REFERENCE_BARS  # the longest window any feature looks back over
MOVERS_PER_SIDE = 5
LOOKBACK_BARS = 15


def _returns(close: FloatArray, bars: int) -> FloatArray:
    out = np.full(close.shape, np.nan)
    out[bars:] = (close[bars:] / close[:-bars] - 1.0) * 100.0
    return out


def _rolling(values: FloatArray, window: int) -> NDArray[np.float64]:
    """Windows ending at every bar from ``window - 1`` on, shape (n - window + 1, window)."""
    return sliding_window_view(values, window)


def _tail_fill(n: int, tail: FloatArray) -> FloatArray:
    """Put per-window results at the bars the windows end on, NaN before."""
    out = np.full(n, np.nan)
    out[n - tail.shape[0] :] = tail
    return out


def window_features(
    close: FloatArray,
    high: FloatArray,
    low: FloatArray,
    turnover: FloatArray,
    rank: FloatArray,
) -> FloatArray:
    """Features for every bar of one symbol's contiguous 1-minute history, shape (n, F).

    Rows before ``WARMUP_BARS - 1`` are NaN (not enough history). ``rank`` is the
    per-bar :func:`mover_rank`, computed by the caller from the movers it knows.
    """
    n = close.shape[0]
    features = np.full((n, len(FEATURES)), np.nan)
    if n < WARMUP_BARS:
        return features
    log_ret = np.full(n, np.nan)
    log_ret[1:] = np.log(close[1:] / close[:-1])

    turnover_windows = _rolling(turnover, LOOKBACK_BARS)
    window_turnover = _tail_fill(n, turnover_windows.sum(axis=1))
    reference = _rolling(turnover, VOLUME_REFERENCE_BARS)
    ref_mean = _tail_fill(n, reference.mean(axis=1))
    ref_std = _tail_fill(n, reference.std(axis=1))
    spread = ref_std / np.sqrt(LOOKBACK_BARS)
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_z = np.where(spread > 0, (window_turnover / LOOKBACK_BARS - ref_mean) / spread, 0.0)

    vol_15 = _tail_fill(n, _rolling(log_ret[1:], LOOKBACK_BARS).std(axis=1)) * 100.0
    vol_60 = _tail_fill(n, _rolling(log_ret[1:], 60).std(axis=1)) * 100.0
    hour_high = _tail_fill(n, _rolling(high, 60).max(axis=1))
    hour_low = _tail_fill(n, _rolling(low, 60).min(axis=1))
    hour_span = hour_high - hour_low
    with np.errstate(divide="ignore", invalid="ignore"):
        range_pos = np.where(hour_span > 0, (close - hour_low) / hour_span, 0.5)

    columns = (
        _returns(close, 1),
        _returns(close, 5),
        _returns(close, LOOKBACK_BARS),
        _returns(close, 60),
        np.log10(1.0 + window_turnover),
        volume_z,
        vol_15,
        vol_60,
        range_pos,
        (high - low) / close * 100.0,
        rank,
    )
    for index, column in enumerate(columns):
        features[:, index] = column
    features[: WARMUP_BARS - 1, :] = np.nan
    return features


def newest_features(
    close: FloatArray,
    high: FloatArray,
    low: FloatArray,
    turnover: FloatArray,
    rank: float,
) -> FloatArray:
    """The feature row of the last bar of exactly ``WARMUP_BARS`` contiguous bars: the
    same values as ``window_features(...)[-1]``, computed only for that bar (the live
    path, once per candle)."""
    n = close.shape[0]
    if n != WARMUP_BARS:
        raise ValueError(f"newest_features needs exactly {WARMUP_BARS} bars, got {n}")
    last = close[-1]
    log_ret = np.log(close[n - 60 :] / close[n - 61 : n - 1])
    window_turnover = turnover[n - LOOKBACK_BARS :].sum()
    reference = turnover[n - VOLUME_REFERENCE_BARS :]
    spread = reference.std() / np.sqrt(LOOKBACK_BARS)
    volume_z = (window_turnover / LOOKBACK_BARS - reference.mean()) / spread if spread > 0 else 0.0
    hour_low = low[n - 60 :].min()
    hour_span = high[n - 60 :].max() - hour_low
    range_pos = (last - hour_low) / hour_span if hour_span > 0 else 0.5
    return np.array(
        [
            (last / close[-2] - 1.0) * 100.0,
            (last / close[-6] - 1.0) * 100.0,
            (last / close[-1 - LOOKBACK_BARS] - 1.0) * 100.0,
            (last / close[-61] - 1.0) * 100.0,
            np.log10(1.0 + window_turnover),
            volume_z,
            log_ret[60 - LOOKBACK_BARS :].std() * 100.0,
            log_ret.std() * 100.0,
            range_pos,
            (high[-1] - low[-1]) / last * 100.0,
            rank,
        ],
        dtype=np.float64,
    )


def mover_rank(symbol: str, movers: Mapping[str, float]) -> float:
    """The symbol's place among movers (``symbol -> 15-minute pct_change``).

    Gainers are the ``MOVERS_PER_SIDE`` largest positive changes, losers the largest
    negative ones; the top gainer scores +1.0, the fifth +0.2, the top loser -1.0.
    """
    change = movers.get(symbol)
    if change is None or change == 0 or not np.isfinite(change):
        return 0.0
    if change > 0:
        gainers = sorted((v for v in movers.values() if v > 0), reverse=True)
        place = gainers.index(change)
        sign = 1.0
    else:
        losers = sorted(v for v in movers.values() if v < 0)
        place = losers.index(change)
        sign = -1.0
    if place >= MOVERS_PER_SIDE:
        return 0.0
    return sign * (MOVERS_PER_SIDE - place) / MOVERS_PER_SIDE
