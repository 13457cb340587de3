"""``cdb replay``: candle history through the live signal, risk and execution code."""

from cdb.replay.engine import Replay, ReplayConfig, ReplayResult
from cdb.replay.grid import CandleGrid, grid_of_candles
from cdb.replay.history import (
    HistoryError,
    convert_history,
    generate_candles,
    load_candles,
    load_history,
    save_candles,
    save_history,
)

__all__ = [
    "CandleGrid",
    "HistoryError",
    "Replay",
    "ReplayConfig",
    "ReplayResult",
    "convert_history",
    "generate_candles",
    "grid_of_candles",
    "load_candles",
    "load_history",
    "save_candles",
    "save_history",
]
