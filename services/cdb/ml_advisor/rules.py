"""The shape of a rule strategy the evaluation replays (signal_engine's, passed in by cdb.cli).

Kept apart from :mod:`cdb.ml_advisor.evaluation` so that ``cdb`` can name the type without
importing pandas and XGBoost on every command.
"""

from __future__ import annotations

from collections.abc import Callable

from cdb.core.events import MarketData, Signal

__all__ = ["MarketDataRule"]

MarketDataRule = Callable[[MarketData], Signal | None]
"""A stateful rule: one market_data event in, a signal or None out."""
