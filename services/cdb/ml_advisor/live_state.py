"""What the advisor remembers between candles: each symbol's recent bars and the movers.

:class:`CandleWindow` keeps one symbol's last ``WARMUP_BARS`` bars on a contiguous minute
grid, the same grid :func:`cdb.ml_advisor.dataset.minute_grid` builds for training: a
missing minute becomes a flat bar at the previous close with zero volume; a gap longer
than the window starts the window over. Next to the bars it keeps their prices and turnover
as numpy columns, shifted by one per new bar, so a candle's features read them as they are
instead of converting the whole window every minute. :class:`MoversBoard` keeps the
screener's latest movers snapshots (``market_data`` events of one window share a timestamp).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from cdb.core.events import Candle, MarketData
from cdb.ml_advisor.features import WARMUP_BARS, mover_rank, newest_features

__all__ = ["Accepted", "CandleWindow", "MoversBoard"]

BAR_SECONDS = 60
SNAPSHOTS_KEPT = 10


class Accepted(StrEnum):
    APPENDED = "appended"
    REPLACED = "replaced"  # the same bar again (an update or a backfill)
    RESTARTED = "restarted"  # a gap longer than the window
    STALE = "stale"  # older than the newest bar: stored, but not a live bar


@dataclass(frozen=True)
class Bar:
    open_time: int
    close: float
    high: float
    low: float
    turnover: float


class CandleWindow:
    """One symbol's last bars, enough for every feature."""

    def __init__(self, size: int = WARMUP_BARS) -> None:
        self.size = size
        self.bars: deque[Bar] = deque(maxlen=size)
        # close, high, low, turnover of ``bars``, right-aligned: column -1 is the newest
        self.columns: NDArray[np.float64] = np.zeros((4, size))

    @property
    def ready(self) -> bool:
        return len(self.bars) >= self.size

    @property
    def last_open_time(self) -> int | None:
        return self.bars[-1].open_time if self.bars else None

    def add(self, candle: Candle) -> Accepted:
        bar = Bar(candle.open_time, candle.close, candle.high, candle.low, candle.turnover)
        last = self.bars[-1] if self.bars else None
        if last is None:
            self._append(bar)
            return Accepted.APPENDED
        if bar.open_time == last.open_time:
            self.bars[-1] = bar
            self.columns[:, -1] = (bar.close, bar.high, bar.low, bar.turnover)
            return Accepted.REPLACED
        if bar.open_time < last.open_time:
            return Accepted.STALE
        missing = (bar.open_time - last.open_time) // BAR_SECONDS - 1
        if missing >= self.size:
            self.bars.clear()
            self._append(bar)
            return Accepted.RESTARTED
        for step in range(1, missing + 1):
            at = last.open_time + step * BAR_SECONDS
            self._append(Bar(at, last.close, last.close, last.close, 0.0))
        self._append(bar)
        return Accepted.APPENDED

    def _append(self, bar: Bar) -> None:
        self.bars.append(bar)
        self.columns[:, :-1] = self.columns[:, 1:]
        self.columns[:, -1] = (bar.close, bar.high, bar.low, bar.turnover)

    def features(self, rank: float) -> NDArray[np.float64]:
        """The feature row of the newest bar (call only when ``ready``)."""
        close, high, low, turnover = self.columns
        return newest_features(close, high, low, turnover, rank)


class MoversBoard:
    """The screener's recent movers snapshots: ``timestamp -> {symbol: pct_change}``."""

    def __init__(self, max_age_s: int) -> None:
        self.max_age_s = max_age_s
        self.snapshots: dict[int, dict[str, float]] = {}

    def add(self, event: MarketData) -> None:
        self.snapshots.setdefault(event.timestamp, {})[event.symbol] = event.pct_change
        for old in sorted(self.snapshots)[:-SNAPSHOTS_KEPT]:
            del self.snapshots[old]

    def snapshot_for(self, open_time: int) -> dict[str, float] | None:
        """The newest snapshot that can describe the bar opened at ``open_time``: its own
        (stamped at the bar's end, as training ranks it) or an older one, never a later
        minute's, which training could not have seen for this bar."""
        usable = [
            ts
            for ts in self.snapshots
            if open_time - self.max_age_s <= ts <= open_time + BAR_SECONDS
        ]
        return self.snapshots[max(usable)] if usable else None

    def rank(self, symbol: str, open_time: int) -> float:
        snapshot = self.snapshot_for(open_time)
        return mover_rank(symbol, snapshot) if snapshot is not None else 0.0
