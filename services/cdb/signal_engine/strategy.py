"""The momentum rule, pure: no I/O, no clock. ``cdb replay`` runs this same code on history.

Usage::

    strategy = MomentumStrategy(StrategyParams(threshold_pct=3.0))
    state = CooldownState()
    signal = strategy.on_market_data(market_data, state)   # Signal | None; updates state

A signal when ``pct_change >= threshold`` and ``volume >= min_volume``; long on gainers,
short on losers (``pct_change <= -threshold``) only with ``allow_short``;
``confidence = min(|pct_change| / 10, 1)``. One move is one signal: after a signal the
symbol is quiet for ``cooldown_s`` of market time. ``signal_id`` is derived from the
inputs, so the same window always gives the same id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from cdb.core.events import ControlSettings, MarketData, Signal, deterministic_id

__all__ = [
    "CooldownState",
    "LastSignal",
    "MomentumStrategy",
    "StrategyParams",
    "SuppressReason",
    "Suppressed",
    "interval_minutes",
    "signal_id_for",
]

STRATEGY_NAME = "momentum"
SuppressReason = Literal["threshold", "volume", "cooldown", "paused", "lookback"]


@dataclass(frozen=True)
class StrategyParams:
    """The rule's knobs; ``control`` events replace them live."""

    threshold_pct: float = 3.0
    min_volume: float = 100_000.0
    lookback_min: int = 15
    allow_short: bool = False
    cooldown_s: float | None = None
    paused: bool = False

    @property
    def effective_cooldown_s(self) -> float:
        return self.cooldown_s if self.cooldown_s is not None else self.lookback_min * 60.0

    def with_control(self, control: ControlSettings) -> StrategyParams:
        """These params with the control's non-empty fields applied."""
        changes: dict[str, object] = {}
        if control.signal_threshold_pct is not None:
            changes["threshold_pct"] = control.signal_threshold_pct
        if control.signal_min_volume is not None:
            changes["min_volume"] = control.signal_min_volume
        if control.lookback_min is not None:
            changes["lookback_min"] = control.lookback_min
        if control.paused is not None:
            changes["paused"] = control.paused
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LastSignal:
    signal_id: str
    timestamp: float


@dataclass
class CooldownState:
    """The last signal per symbol: all the strategy remembers."""

    last: dict[str, LastSignal] = field(default_factory=dict)

    def remember(self, signal: Signal) -> None:
        self.last[signal.symbol] = LastSignal(signal.signal_id, signal.timestamp)


@dataclass(frozen=True)
class Suppressed:
    """Why a market_data event did not become a signal (a metric label)."""

    reason: SuppressReason


_INTERVAL = re.compile(r"^([0-9]+)([mh])$")


def interval_minutes(interval: str) -> int:
    """``"15m"`` → 15, ``"1h"`` → 60."""
    match = _INTERVAL.match(interval)
    if match is None:
        raise ValueError(f"not an interval: {interval!r}")
    number = int(match.group(1))
    return number * 60 if match.group(2) == "h" else number


def signal_id_for(md: MarketData, side: str, strategy: str = STRATEGY_NAME) -> str:
    """Deterministic: the same window of the same symbol always gives the same id."""
    return deterministic_id("sig", strategy, md.symbol, side, md.interval, md.timestamp)


class MomentumStrategy:
    """The seed's momentum rule with a per-symbol cooldown."""

    name = STRATEGY_NAME

    def __init__(self, params: StrategyParams) -> None:
        self.params = params

    def evaluate(self, md: MarketData, state: CooldownState) -> Signal | Suppressed:
        """The signal this event makes, or why it makes none. Does not change ``state``."""
        p = self.params
        if p.paused:
            return Suppressed("paused")
        if interval_minutes(md.interval) != p.lookback_min:
            return Suppressed("lookback")
        if md.pct_change >= p.threshold_pct:
            side = "long"
        elif p.allow_short and md.pct_change <= -p.threshold_pct:
            side = "short"
        else:
            return Suppressed("threshold")
        if md.volume < p.min_volume:
            return Suppressed("volume")
        signal_id = signal_id_for(md, side, self.name)
        last = state.last.get(md.symbol)
        if (
            last is not None
            and last.signal_id != signal_id
            and abs(md.timestamp - last.timestamp) < p.effective_cooldown_s
        ):
            return Suppressed("cooldown")
        move = abs(md.pct_change)
        direction = "gain" if side == "long" else "loss"
        return Signal(
            event_id=signal_id,
            signal_id=signal_id,
            symbol=md.symbol,
            side="long" if side == "long" else "short",
            confidence=min(move / 10.0, 1.0),
            reason=(
                f"{direction} {move:.2f}% >= {p.threshold_pct:g}% over {md.interval} "
                f"with volume {md.volume:,.0f} >= {p.min_volume:,.0f}"
            ),
            strategy=self.name,
            price=md.price,
            pct_change=md.pct_change,
            timestamp=float(md.timestamp),
        )

    def on_market_data(self, md: MarketData, state: CooldownState) -> Signal | None:
        """``evaluate`` and remember the signal: the call a replay loop makes."""
        outcome = self.evaluate(md, state)
        if isinstance(outcome, Suppressed):
            return None
        state.remember(outcome)
        return outcome
