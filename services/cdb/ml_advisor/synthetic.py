"""A seeded synthetic candle history in MEXC's kline layout, for tests, demos and benches.

Per symbol: a fat-tailed random walk (Student-t, 4 degrees of freedom) with volatility
clustering and a daily turnover cycle, plus momentum episodes. An episode starts with an
ignition (a steady climb on rising turnover) and then either continues (orderly bars,
turnover stays high) or fades (a turnover spike with long wicks at ignition, then a
give-back). A quarter of the episodes run downwards. Nothing here is market data: the
figures a model reaches on it say whether the machinery works, not whether it earns money.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cdb.ml_advisor.candle_history import HISTORY_COLUMNS, validate_history

__all__ = ["DEFAULT_START", "generate_history"]

DEFAULT_START = 1_735_689_600  # 2025-01-01T00:00:00Z
EPISODES_PER_MINUTE = 1 / 240


def _symbol_names(count: int) -> list[str]:
    known = ["BTC", "ETH", "SOL", "XRP", "DOGE", "PEPE", "WIF", "SUI", "TON", "LINK", "AVAX"]
    names = [f"{base}_USDT" for base in known[:count]]
    names += [f"ALT{i}_USDT" for i in range(len(names), count)]
    return names


def _one_symbol(rng: np.random.Generator, symbol: str, minutes: int, start: int) -> pd.DataFrame:
    price0 = 10 ** rng.uniform(-1.0, 4.5)
    sigma = rng.uniform(0.0006, 0.0015)
    base_turnover = 10 ** rng.uniform(3.4, 4.5)
    contract_size = 10.0 ** np.floor(np.log10(price0) - 3)

    clustering = np.zeros(minutes)
    shocks = rng.normal(0.0, 0.12, minutes)
    for t in range(1, minutes):
        clustering[t] = 0.98 * clustering[t - 1] + shocks[t]
    sigma_t = sigma * np.exp(clustering)
    returns = sigma_t * rng.standard_t(4, minutes) / np.sqrt(2.0)
    hours = np.arange(minutes) / 60.0
    turnover = base_turnover * (1.0 + 0.3 * np.sin(2 * np.pi * hours / 24.0))
    turnover *= rng.lognormal(0.0, 0.4, minutes) * (1.0 + 0.15 * np.abs(returns) / sigma_t)
    wick = np.ones(minutes)

    for begin in np.flatnonzero(rng.random(minutes) < EPISODES_PER_MINUTE):
        ignition = int(rng.integers(8, 17))
        follow = int(rng.integers(15, 36))
        drift = rng.uniform(0.0025, 0.0045) * (1.0 if rng.random() < 0.75 else -1.0)
        first, middle, end = begin, begin + ignition, begin + ignition + follow
        if end >= minutes:
            continue
        returns[first:middle] += drift
        if rng.random() < 0.55:  # continuation: turnover builds, bars stay orderly
            turnover[first:middle] *= np.linspace(2.0, 6.0, ignition)
            returns[middle:end] += drift * rng.uniform(0.3, 0.6)
            turnover[middle:end] *= rng.uniform(3.0, 4.0)
        else:  # fade: a spike with long wicks, then the move is given back
            turnover[first : first + 2] *= 15.0
            turnover[first + 2 : middle] *= 1.5
            wick[first:middle] = 6.0
            returns[middle:end] -= drift * rng.uniform(0.4, 0.8)
            turnover[middle:end] *= 1.8

    close = price0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([price0], close[:-1]))
    spread = np.abs(rng.normal(0.0, 1.0, (2, minutes))) * sigma_t * 0.5 * wick
    high = np.maximum(open_, close) * (1.0 + spread[0])
    low = np.minimum(open_, close) * (1.0 - spread[1])
    return pd.DataFrame(
        {
            "symbol": symbol,
            "time": start + 60 * np.arange(minutes, dtype=np.int64),
            "open": open_,
            "close": close,
            "high": high,
            "low": low,
            "vol": np.round(turnover / (close * contract_size)),
            "amount": turnover,
        }
    )


def generate_history(
    *, symbols: int = 8, minutes: int = 3 * 1440, seed: int = 7, start: int = DEFAULT_START
) -> pd.DataFrame:
    """``symbols`` x ``minutes`` 1-minute bars from ``start`` (unix s), the same for a seed."""
    if symbols < 1 or minutes < 1:
        raise ValueError("symbols and minutes must be >= 1")
    rng = np.random.default_rng(seed)
    frames = [_one_symbol(rng, name, minutes, start) for name in _symbol_names(symbols)]
    history = pd.concat(frames, ignore_index=True)[list(HISTORY_COLUMNS)]
    return validate_history(history, f"synthetic history (seed {seed})")
