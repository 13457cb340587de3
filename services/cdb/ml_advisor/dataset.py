"""From a candle history to the model's table: features, forward returns and labels per bar.

Each symbol's bars are put on a contiguous minute grid first (a minute without trades is a
flat bar at the previous close with zero volume, as MEXC prints it), then
:func:`cdb.ml_advisor.features.window_features` runs over it. The mover rank is computed
across symbols per minute from the same 15-minute return the screener ranks by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cdb.ml_advisor.features import FEATURES, LOOKBACK_BARS, MOVERS_PER_SIDE, window_features

__all__ = ["LabelSpec", "build_dataset", "minute_grid", "mover_ranks"]

BAR_SECONDS = 60


@dataclass(frozen=True)
class LabelSpec:
    """What the model predicts: the return ``horizon_min`` minutes ahead reaches the bar."""

    horizon_min: int = 15
    min_return_pct: float = 0.5


def minute_grid(bars: pd.DataFrame) -> pd.DataFrame:
    """One symbol's bars on every minute from its first to its last bar."""
    times = np.arange(int(bars["time"].iloc[0]), int(bars["time"].iloc[-1]) + 1, BAR_SECONDS)
    grid = bars.set_index("time").reindex(times)
    filled = grid["close"].isna()
    grid["close"] = grid["close"].ffill()
    for column in ("open", "high", "low"):
        grid[column] = grid[column].fillna(grid["close"])
    grid[["vol", "amount"]] = grid[["vol", "amount"]].fillna(0.0)
    grid["symbol"] = bars["symbol"].iloc[0]
    grid["filled"] = filled
    grid.index.name = "time"
    return grid.reset_index()


def _fifteen_minute_return(close: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.full(close.shape, np.nan)
    out[LOOKBACK_BARS:] = (close[LOOKBACK_BARS:] / close[:-LOOKBACK_BARS] - 1.0) * 100.0
    return out


def mover_ranks(grids: list[pd.DataFrame]) -> dict[str, pd.Series]:
    """Per symbol, its mover rank at every minute (see ``features.mover_rank``)."""
    changes = pd.DataFrame(
        {
            str(g["symbol"].iloc[0]): pd.Series(
                _fifteen_minute_return(g["close"].to_numpy(np.float64)), index=g["time"]
            )
            for g in grids
        }
    )
    gainers = changes.where(changes > 0).rank(axis=1, ascending=False, method="min")
    losers = changes.where(changes < 0).rank(axis=1, ascending=True, method="min")
    score = pd.DataFrame(0.0, index=changes.index, columns=changes.columns)
    top = MOVERS_PER_SIDE
    score = score.mask(gainers <= top, (top + 1 - gainers) / top)
    score = score.mask(losers <= top, -(top + 1 - losers) / top)
    return {column: score[column] for column in score.columns}


def build_dataset(history: pd.DataFrame, label: LabelSpec | None = None) -> pd.DataFrame:
    """Features for every bar with enough history, plus ``fwd_return_pct`` and ``label``.

    ``fwd_return_pct`` is NaN where the history ends before the horizon; such rows have
    no label (``label`` is NaN) and are never trained on.
    """
    label = label or LabelSpec()
    grids = [minute_grid(bars) for _, bars in history.groupby("symbol", sort=True)]
    ranks = mover_ranks(grids)
    parts = []
    for grid in grids:
        symbol = str(grid["symbol"].iloc[0])
        close = grid["close"].to_numpy(np.float64)
        rank = ranks[symbol].reindex(grid["time"]).fillna(0.0).to_numpy(np.float64)
        matrix = window_features(
            close,
            grid["high"].to_numpy(np.float64),
            grid["low"].to_numpy(np.float64),
            grid["amount"].to_numpy(np.float64),
            rank,
        )
        frame = pd.DataFrame(matrix, columns=list(FEATURES))
        frame.insert(0, "symbol", symbol)
        frame.insert(1, "time", grid["time"].to_numpy(np.int64))
        frame.insert(2, "close", close)
        frame["window_turnover"] = (
            grid["amount"].rolling(LOOKBACK_BARS, min_periods=LOOKBACK_BARS).sum().to_numpy()
        )
        frame["filled"] = grid["filled"].to_numpy(bool)
        horizon = label.horizon_min
        forward = np.full(close.shape, np.nan)
        forward[:-horizon] = (close[horizon:] / close[:-horizon] - 1.0) * 100.0
        frame["fwd_return_pct"] = forward
        frame["label"] = np.where(
            np.isnan(forward), np.nan, (forward >= label.min_return_pct).astype(np.float64)
        )
        parts.append(frame[~frame[list(FEATURES)].isna().any(axis=1)])
    dataset = pd.concat(parts, ignore_index=True)
    return dataset.sort_values(["time", "symbol"], kind="mergesort").reset_index(drop=True)
