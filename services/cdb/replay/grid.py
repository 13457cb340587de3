"""Candles as a minute-by-symbol grid, and the screener's window over all of it at once.

The replay's fast path (:meth:`cdb.replay.Replay.run_grid`) needs, for every minute and
symbol, what :func:`cdb.bot_ws.window.window_stat` computes from the closed candles:
the window's last price, its ``pct_change`` and its quote volume. Here they come from
numpy over the whole grid, with the same floating-point operations in the same order
(the volume is summed oldest first from 0.0, the change is ``(price - open) / open * 100``),
so every figure is bit-for-bit the one ``window_stat`` gives. ``tests/demo/test_replay.py``
compares the two paths on the same candles.

Columns are the symbols in Python's string order (``top_movers`` breaks ties by symbol);
row ``i`` is the minute ``start + 60 * i``. A grid exists only for candles that fit one
(every ``open_time`` on a whole minute from the first, one candle per symbol and minute,
not mostly empty rows); :func:`grid_of` says ``None`` otherwise and the replay takes its
minute-by-minute path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cdb.core.events import Candle

__all__ = ["CandleGrid", "Window", "grid_of", "grid_of_candles", "window_over"]

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]

# a grid may have this many rows more than minutes with candles before it is too sparse
SPARE_ROWS = 1440


@dataclass(frozen=True)
class CandleGrid:
    """Closed Min1 candles by (minute row, symbol column); NaN where there is no candle."""

    symbols: tuple[str, ...]
    start: int
    present: Bools  # [T, S]
    open: Floats
    high: Floats
    low: Floats
    close: Floats
    turnover: Floats  # 0.0 where there is no candle
    volume: Floats  # contracts (not used by the window; kept to write the candles back)
    candles: int

    @property
    def rows(self) -> int:
        return int(self.present.shape[0])

    @property
    def minutes(self) -> Bools:
        """Rows with at least one candle: the minutes a replay steps through."""
        return np.asarray(self.present.any(axis=1))

    def to_candles(self) -> list[Candle]:
        """The candles again, in (open_time, symbol) order."""
        from cdb.replay.history import candle

        rows, cols = np.nonzero(self.present)
        return [
            candle(
                self.symbols[c],
                self.start + 60 * int(r),
                float(self.open[r, c]),
                float(self.high[r, c]),
                float(self.low[r, c]),
                float(self.close[r, c]),
                float(self.volume[r, c]),
                float(self.turnover[r, c]),
            )
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
        ]


def grid_of(
    symbols: Sequence[str],
    codes: Ints,
    times: Ints,
    columns: dict[str, Floats],
) -> CandleGrid | None:
    """A grid from columns (``codes`` index ``symbols``; ``columns`` holds ``open, high,
    low, close, volume, turnover``), or ``None`` when the candles do not fit one."""
    n = int(times.shape[0])
    if n == 0:
        return None
    order = sorted(range(len(symbols)), key=lambda k: symbols[k])
    names = tuple(symbols[k] for k in order)
    if len(set(names)) != len(names):
        return None
    rank = np.empty(len(symbols), dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(symbols), dtype=np.int64)
    cols = rank[codes]
    start = int(times.min())
    offset = times - start
    if bool((offset % 60).any()):
        return None
    rows = offset // 60
    height = int(rows.max()) + 1
    width = len(names)
    if height > 4 * n + SPARE_ROWS:
        return None  # mostly empty rows (a cheap bound first: no grid allocated)
    flat = rows * width + cols
    cells_seen = np.zeros(height * width, dtype=np.bool_)
    cells_seen[flat] = True
    if int(np.count_nonzero(cells_seen)) != n:
        return None  # two candles of one symbol in one minute: the minute path decides
    present: Bools = cells_seen.reshape(height, width)
    if height > 4 * int(np.count_nonzero(present.any(axis=1))) + SPARE_ROWS:
        return None

    def cells(values: Floats, fill: float) -> Floats:
        grid = np.full(height * width, fill, dtype=np.float64)
        grid[flat] = values
        return grid.reshape(height, width)

    return CandleGrid(
        symbols=names,
        start=start,
        present=present,
        open=cells(columns["open"], np.nan),
        high=cells(columns["high"], np.nan),
        low=cells(columns["low"], np.nan),
        close=cells(columns["close"], np.nan),
        turnover=cells(columns["turnover"], 0.0),
        volume=cells(columns["volume"], 0.0),
        candles=n,
    )


def grid_of_candles(candles: Sequence[Candle]) -> CandleGrid | None:
    """The grid of already validated candles (``None`` when they do not fit one)."""
    if not candles:
        return None
    index: dict[str, int] = {}
    codes = np.fromiter(
        (index.setdefault(c.symbol, len(index)) for c in candles), np.int64, len(candles)
    )
    times = np.fromiter((c.open_time for c in candles), np.int64, len(candles))

    def column(name: str) -> Floats:
        return np.fromiter((getattr(c, name) for c in candles), np.float64, len(candles))

    columns = {
        name: column(name) for name in ("open", "high", "low", "close", "volume", "turnover")
    }
    return grid_of(list(index), codes, times, columns)


@dataclass(frozen=True)
class Window:
    """``window_stat`` for every cell: ``valid`` where it gives a stat (a candle in the
    window, a positive first open, a minute the replay steps through)."""

    valid: Bools
    price: Floats
    pct: Floats
    volume: Floats


def window_over(grid: CandleGrid, lookback: int) -> Window:
    """Each cell's window: the ``lookback`` minutes ending in its row, as ``window_stat``."""
    height = grid.rows
    present, opens, closes, turnover = grid.present, grid.open, grid.close, grid.turnover
    volume = np.zeros_like(turnover)
    price = np.full_like(closes, np.nan)
    first_open = np.full_like(opens, np.nan)
    seen = np.zeros_like(present)
    for k in range(min(lookback, height) - 1, -1, -1):  # oldest minute of the window first
        rows = height - k
        volume[k:] += turnover[:rows]  # 0.0 where no candle: x + 0.0 == x
        price[k:] = np.where(present[:rows], closes[:rows], price[k:])  # newest wins
        seen[k:] |= present[:rows]
    for k in range(min(lookback, height)):  # newest first, so the oldest open wins
        rows = height - k
        first_open[k:] = np.where(present[:rows], opens[:rows], first_open[k:])
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = seen & (first_open > 0) & grid.minutes[:, None]
        pct = (price - first_open) / first_open * 100.0
    return Window(valid=valid, price=price, pct=pct, volume=volume)
