"""Side by side on one candle history: the rule strategy and the model, as they would trade.

The history is replayed minute by minute. The rule sees what signal_engine sees in the
pipeline: a ``MarketData`` event per screener mover (top 5 gainers and losers by 15-minute
change, volume = the window's USDT turnover); the rule itself is passed in (the CLI passes
signal_engine's own ``MomentumStrategy``), so this module never re-implements it. The
model sees every closed candle and signals long at confidence > threshold (the seed:
"only signals > 0.7"), with the same per-symbol cooldown as the rule (one signal per move).

Every signal is scored at the close ``horizon`` minutes later: a hit when the price moved
in the signal's direction; paper PnL on a fixed notional after the taker fee on entry and
exit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cdb.core.events import MarketData
from cdb.ml_advisor.dataset import LabelSpec, build_dataset
from cdb.ml_advisor.features import FEATURES
from cdb.ml_advisor.inference import Predictor
from cdb.ml_advisor.rules import MarketDataRule

__all__ = [
    "EvaluationConfig",
    "EvaluationResult",
    "MarketDataRule",
    "StrategySummary",
    "evaluate",
    "model_signals",
    "rule_signals",
    "score_signals",
]

BAR_SECONDS = 60
SIGNAL_COLUMNS = ["strategy", "symbol", "time", "side", "confidence", "entry", "exit"]


@dataclass(frozen=True)
class EvaluationConfig:
    threshold: float = 0.7
    horizon_min: int = 15
    fee_pct: float = 0.02
    notional_usdt: float = 1000.0
    cooldown_min: int = 15


@dataclass(frozen=True)
class StrategySummary:
    strategy: str
    signals: int
    hits: int
    hit_rate: float | None
    avg_return_pct: float | None
    pnl_usdt: float
    fees_usdt: float
    max_drawdown_usdt: float
    shared: int  # signals the other strategy also gave (same symbol, within the horizon)


@dataclass(frozen=True)
class EvaluationResult:
    config: EvaluationConfig
    model_version: str
    rule_name: str
    start: int
    end: int
    symbols: int
    bars: int
    summaries: list[StrategySummary]
    trades: pd.DataFrame
    training_overlap_bars: int


def _with_cooldown(signals: pd.DataFrame, cooldown_s: int) -> pd.DataFrame:
    """Keep a symbol's first signal of a move; drop those within ``cooldown_s`` of a kept one."""
    keep = []
    last: dict[str, int] = {}
    for index, symbol, at in zip(signals.index, signals["symbol"], signals["time"], strict=True):
        previous = last.get(symbol)
        if previous is None or at - previous >= cooldown_s:
            keep.append(index)
            last[symbol] = int(at)
    return signals.loc[keep]


def model_signals(
    dataset: pd.DataFrame, predictor: Predictor, config: EvaluationConfig
) -> pd.DataFrame:
    """Long signals where the model's confidence reaches the threshold (real bars only)."""
    live = dataset[~dataset["filled"]]
    confidence = predictor.confidences(live[list(FEATURES)].to_numpy(np.float64))
    chosen = live.assign(confidence=confidence)[confidence > config.threshold]
    chosen = _with_cooldown(chosen, config.cooldown_min * BAR_SECONDS)
    return pd.DataFrame(
        {
            "strategy": "model",
            "symbol": chosen["symbol"],
            "time": chosen["time"],
            "side": "long",
            "confidence": chosen["confidence"],
            "entry": chosen["close"],
            "exit": chosen["close"] * (1 + chosen["fwd_return_pct"] / 100.0),
        }
    )


def rule_signals(dataset: pd.DataFrame, rule: MarketDataRule, rule_name: str) -> pd.DataFrame:
    """Replay the screener's movers through the rule, in time order."""
    movers = dataset[(dataset["mover_rank"] != 0) & ~dataset["filled"]]
    exits = dict(
        zip(
            zip(movers["symbol"], movers["time"], strict=True),
            movers["close"] * (1 + movers["fwd_return_pct"] / 100.0),
            strict=True,
        )
    )
    rows = []
    for symbol, at, close, change, turnover in zip(
        movers["symbol"],
        movers["time"],
        movers["close"],
        movers["ret_15m"],
        movers["window_turnover"],
        strict=True,
    ):
        event = MarketData(
            symbol=symbol,
            price=float(close),
            volume=float(turnover),
            pct_change=float(change),
            timestamp=int(at) + BAR_SECONDS,
            interval="15m",
        )
        signal = rule(event)
        if signal is not None:
            rows.append(
                (
                    rule_name,
                    symbol,
                    int(at),
                    signal.side,
                    signal.confidence,
                    float(close),
                    exits[symbol, at],
                )
            )
    return pd.DataFrame(rows, columns=SIGNAL_COLUMNS)


def score_signals(signals: pd.DataFrame, config: EvaluationConfig) -> pd.DataFrame:
    """Return, hit and PnL after fees per signal; signals without an outcome are dropped."""
    scored = signals[signals["exit"].notna()].copy()
    direction = np.where(scored["side"] == "long", 1.0, -1.0)
    scored["return_pct"] = direction * (scored["exit"] / scored["entry"] - 1.0) * 100.0
    scored["hit"] = scored["return_pct"] > 0
    scored["fees_usdt"] = 2 * config.notional_usdt * config.fee_pct / 100.0
    scored["pnl_usdt"] = config.notional_usdt * scored["return_pct"] / 100.0 - scored["fees_usdt"]
    return scored.sort_values(["time", "symbol"], kind="mergesort").reset_index(drop=True)


def _shared(mine: pd.DataFrame, theirs: pd.DataFrame, window_s: int) -> int:
    count = 0
    by_symbol = {s: g["time"].to_numpy() for s, g in theirs.groupby("symbol")}
    for symbol, at in zip(mine["symbol"], mine["time"], strict=True):
        times = by_symbol.get(symbol)
        if times is not None and np.any(np.abs(times - at) <= window_s):
            count += 1
    return count


def _summary(
    name: str, trades: pd.DataFrame, other: pd.DataFrame, window_s: int
) -> StrategySummary:
    equity = trades["pnl_usdt"].cumsum().to_numpy()
    drawdown = float(
        np.max(
            np.maximum.accumulate(np.concatenate(([0.0], equity))) - np.concatenate(([0.0], equity))
        )
    )
    count = int(trades.shape[0])
    return StrategySummary(
        strategy=name,
        signals=count,
        hits=int(trades["hit"].sum()),
        hit_rate=float(trades["hit"].mean()) if count else None,
        avg_return_pct=float(trades["return_pct"].mean()) if count else None,
        pnl_usdt=float(trades["pnl_usdt"].sum()),
        fees_usdt=float(trades["fees_usdt"].sum()),
        max_drawdown_usdt=drawdown,
        shared=_shared(trades, other, window_s),
    )


def evaluate(
    history: pd.DataFrame,
    predictor: Predictor,
    rule: MarketDataRule,
    *,
    rule_name: str = "rule",
    config: EvaluationConfig | None = None,
    since: int | None = None,
) -> EvaluationResult:
    """Replay ``history`` (signals only from ``since`` on; earlier bars warm the features)."""
    config = config or EvaluationConfig()
    label = LabelSpec(horizon_min=config.horizon_min)
    dataset = build_dataset(history, label)
    if since is not None:
        dataset = dataset[dataset["time"] >= since].reset_index(drop=True)
    if dataset.empty:
        raise ValueError("no bar to evaluate: the history is shorter than the 2-hour warm-up")
    manifest = predictor.model.manifest
    overlap = int(
        (
            (dataset["time"] >= manifest.training_start)
            & (dataset["time"] <= manifest.training_end)
            & dataset["symbol"].isin(manifest.training_symbols)
        ).sum()
    )
    model = score_signals(model_signals(dataset, predictor, config), config)
    rules = score_signals(rule_signals(dataset, rule, rule_name), config)
    window_s = config.horizon_min * BAR_SECONDS
    trades = pd.concat([rules, model], ignore_index=True)
    return EvaluationResult(
        config=config,
        model_version=predictor.version,
        rule_name=rule_name,
        start=int(dataset["time"].min()),
        end=int(dataset["time"].max()),
        symbols=int(dataset["symbol"].nunique()),
        bars=int((~dataset["filled"]).sum()),
        summaries=[
            _summary(rule_name, rules, model, window_s),
            _summary("model", model, rules, window_s),
        ],
        trades=trades,
        training_overlap_bars=overlap,
    )
