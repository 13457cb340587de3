"""``cdb replay``: candle history through the live signal, risk and execution code."""

from cdb.replay.engine import Replay, ReplayConfig, ReplayResult
from cdb.replay.history import HistoryError, generate_candles, load_candles, save_candles

__all__ = [
    "HistoryError",
    "Replay",
    "ReplayConfig",
    "ReplayResult",
    "generate_candles",
    "load_candles",
    "save_candles",
]
