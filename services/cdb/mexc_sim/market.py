"""The market model: seeded random walks, deals, Min1 bars and tickers for every contract.

Time advances in fixed one-second steps of *sim* time, so the market depends only on the
config and the seed, never on how often the server happens to ask: same seed, same deals.
Bars before the start are generated per minute (``history_min``); from the start on every
bar is the aggregate of the deals the model produced, so REST klines and WebSocket deals
always agree.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from cdb.mexc_sim.config import SimConfig
from cdb.mexc_sim.contracts import Contract, make_contracts

__all__ = ["INTERVAL_MINUTES", "Bar", "Deal", "Market", "SymbolState"]

STEP_MS = 1000
INTERVAL_MINUTES: dict[str, int] = {
    "Min1": 1,
    "Min5": 5,
    "Min15": 15,
    "Min30": 30,
    "Min60": 60,
    "Hour4": 240,
    "Hour8": 480,
    "Day1": 1440,
}


class Deal(NamedTuple):
    """One trade: time ms, price, contracts, taker side (1 buy, 2 sell), open flag, id."""

    t: int
    p: float
    v: int
    side: int
    open_flag: int
    id: int

    def wire(self) -> dict[str, Any]:
        """The push.deal / REST deals object (``i`` and ``cts`` are strings on the wire)."""
        return {
            "p": self.p,
            "v": self.v,
            "T": self.side,
            "O": self.open_flag,
            "M": 2,
            "t": self.t,
            "i": str(self.id),
            "cts": str(self.t),
        }


@dataclass(slots=True)
class Bar:
    """A Min1 bar. ``o/h/l/c`` are its own trades (MEXC's ``real*``); flat when none."""

    t: int
    prev_close: float
    o: float
    h: float
    low: float
    c: float
    vol: float = 0.0
    amount: float = 0.0
    trades: int = 0

    def add(self, price: float, contracts: int, contract_size: float) -> None:
        if self.trades == 0:
            self.o = self.h = self.low = self.c = price
        else:
            self.h = max(self.h, price)
            self.low = min(self.low, price)
            self.c = price
        self.vol += contracts
        self.amount += contracts * contract_size * price
        self.trades += 1


@dataclass
class SymbolState:
    contract: Contract
    mid: float
    last_price: float
    bars: list[Bar] = field(default_factory=list)
    recent: deque[Deal] = field(default_factory=lambda: deque(maxlen=100))
    next_deal_id: int = 1

    def bar_index(self, t: int) -> int:
        """Index of the bar opening at ``t`` seconds (may be out of range)."""
        return (t - self.bars[0].t) // 60 if self.bars else 0


class Market:
    """Every contract's state, advanced step by step from the start time."""

    def __init__(self, config: SimConfig, start_ms: int) -> None:
        if start_ms % 60_000:
            raise ValueError("start_ms must be on a minute boundary")
        self.config = config
        self.start_ms = start_ms
        self.now_ms = start_ms  # end of the last generated step
        self.contracts = make_contracts(config.symbols, config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.states: dict[str, SymbolState] = {}
        self.order = [c.symbol for c in self.contracts]
        self.deals_generated = 0
        self.keep_bars = max(config.keep_bars, config.history_min + 120)
        # deals generated but not pushed yet (REST calls advance the market too)
        self.pending: dict[str, list[Deal]] = {}
        self.pending_deals = 0
        self._make_history()

    # ----- generation -------------------------------------------------------------------

    def _make_history(self) -> None:
        cfg = self.config
        count = len(self.contracts)
        minutes = cfg.history_min
        per_min = cfg.deals_per_s * 60
        sd = cfg.volatility * math.sqrt(per_min)
        base = np.array([c.base_price for c in self.contracts])
        rets = self.rng.normal(0.0, sd, (minutes, count))
        closes = base * np.exp(np.cumsum(rets, axis=0)) if minutes else base[None, :]
        wick = np.abs(self.rng.normal(0.0, sd / 2, (2, max(minutes, 1), count)))
        trades = self.rng.poisson(per_min, (max(minutes, 1), count))
        start_s = self.start_ms // 1000
        for j, contract in enumerate(self.contracts):
            state = SymbolState(contract=contract, mid=float(base[j]), last_price=0.0)
            previous = contract.round_price(float(base[j]))
            for m in range(minutes):
                close = contract.round_price(float(closes[m, j]))
                opened = previous
                n = int(trades[m, j])
                high = contract.round_price(max(opened, close) * math.exp(float(wick[0, m, j])))
                low = contract.round_price(min(opened, close) * math.exp(-float(wick[1, m, j])))
                contracts_each = self._deal_size(contract, close)
                bar = Bar(
                    t=start_s - (minutes - m) * 60,
                    prev_close=previous,
                    o=opened if n else previous,
                    h=high if n else previous,
                    low=low if n else previous,
                    c=close if n else previous,
                    vol=float(n * contracts_each),
                    amount=n * contracts_each * contract.contract_size * close,
                    trades=n,
                )
                state.bars.append(bar)
                previous = bar.c
            state.mid = previous
            state.last_price = previous
            self.states[contract.symbol] = state

    def _deal_size(self, contract: Contract, price: float) -> int:
        return max(1, round(self.config.deal_notional_usdt / (price * contract.contract_size)))

    def _episode_drift(self, minute: int) -> tuple[dict[int, float], dict[int, float]]:
        """Per-step log drift and activity multiplier of the symbols in a pump/dump episode."""
        cfg = self.config
        drift: dict[int, float] = {}
        activity: dict[int, float] = {}
        if cfg.scenario != "pump":
            return drift, activity
        span = 2 * cfg.pump_min
        per_step = math.log(1 + cfg.pump_pct / 100) / (cfg.pump_min * 60)
        first = max(0, (minute - span + 1) // cfg.pump_every_min)
        for episode in range(first, minute // cfg.pump_every_min + 1):
            into = minute - episode * cfg.pump_every_min
            if not 0 <= into < span:
                continue
            index = random.Random(f"pump-{cfg.seed}-{episode}").randrange(len(self.contracts))
            drift[index] = drift.get(index, 0.0) + (per_step if into < cfg.pump_min else -per_step)
            activity[index] = 4.0
        return drift, activity

    def advance_to(self, sim_ms: int, budget_s: float | None = None) -> dict[str, list[Deal]]:
        """Generate every whole step ending at or before ``sim_ms``; the new deals per symbol.

        With ``budget_s``, stop after that much work: at a speed the machine cannot
        generate, the market falls behind the wall clock instead of stalling the server
        (the steps, and so the market, stay the same). The new deals are also kept in
        :attr:`pending` until :meth:`drain` hands them to the push loop, so a REST call
        that advances the market loses no push.
        """
        new: dict[str, list[Deal]] = {}
        deadline = None if budget_s is None else time.monotonic() + budget_s
        while self.now_ms + STEP_MS <= sim_ms:
            self._step(new)
            if deadline is not None and time.monotonic() > deadline:
                break
        for symbol, deals in new.items():
            self.pending.setdefault(symbol, []).extend(deals)
            self.pending_deals += len(deals)
        return new

    def drain(self) -> dict[str, list[Deal]]:
        """The deals not pushed yet, oldest first; the buffer is emptied."""
        pending, self.pending = self.pending, {}
        self.pending_deals = 0
        return pending

    def _step(self, new: dict[str, list[Deal]]) -> None:
        cfg = self.config
        step_start = self.now_ms
        minute_s = step_start // 60_000 * 60
        drift, activity = self._episode_drift((step_start - self.start_ms) // 60_000)
        rates = np.full(len(self.contracts), cfg.deals_per_s * STEP_MS / 1000)
        for index, factor in activity.items():
            rates[index] *= factor
        counts = self.rng.poisson(rates)
        total = int(counts.sum())
        noise = self.rng.normal(0.0, cfg.volatility, total).tolist()
        offsets = self.rng.integers(0, STEP_MS, total).tolist()
        sizes = self.rng.lognormal(0.0, 0.7, total).tolist()
        sides = self.rng.integers(1, 3, total).tolist()
        flags = self.rng.integers(1, 4, total).tolist()
        cursor = 0
        for index, symbol in enumerate(self.order):
            state = self.states[symbol]
            contract = state.contract
            bars = state.bars
            if not bars or bars[-1].t != minute_s:
                last = bars[-1].c if bars else state.last_price
                bars.append(Bar(t=minute_s, prev_close=last, o=last, h=last, low=last, c=last))
                if len(bars) > self.keep_bars + 100:
                    del bars[: len(bars) - self.keep_bars]
            bar = bars[-1]
            n = int(counts[index])
            step_drift = drift.get(index, 0.0)
            if n == 0:
                state.mid *= math.exp(step_drift)
                continue
            deals = new.setdefault(symbol, [])
            log_mid = math.log(state.mid)
            times = sorted(offsets[cursor : cursor + n])
            for k in range(n):
                log_mid += noise[cursor + k] + step_drift / n
                price = contract.round_price(math.exp(log_mid))
                if price <= 0:
                    price = contract.price_unit
                size = max(1, round(self._deal_size(contract, price) * sizes[cursor + k]))
                deal = Deal(
                    t=step_start + times[k],
                    p=price,
                    v=size,
                    side=sides[cursor + k],
                    open_flag=flags[cursor + k],
                    id=contract.contract_id * 10_000_000_000 + state.next_deal_id,
                )
                state.next_deal_id += 1
                bar.add(price, size, contract.contract_size)
                state.recent.append(deal)
                deals.append(deal)
            state.mid = math.exp(log_mid)
            state.last_price = deals[-1].p
            cursor += n
        self.deals_generated += total
        self.now_ms = step_start + STEP_MS

    # ----- queries ----------------------------------------------------------------------

    def bars_between(self, symbol: str, start_s: int, end_s: int) -> list[Bar]:
        """Min1 bars opening in ``[start_s, end_s]`` that exist (oldest are trimmed)."""
        state = self.states[symbol]
        bars = state.bars
        first = max(0, state.bar_index(start_s // 60 * 60))
        last = min(len(bars) - 1, state.bar_index(end_s // 60 * 60))
        return bars[first : last + 1] if first <= last else []

    def current_bar(self, symbol: str) -> Bar:
        return self.states[symbol].bars[-1]

    def ticker(self, symbol: str) -> dict[str, Any]:
        """The ``push.ticker`` / REST ticker object, 24h figures from the kept bars."""
        state = self.states[symbol]
        day = state.bars[-1440:]
        last = state.last_price
        opened = day[0].prev_close
        volume = sum(b.vol for b in day)
        unit = state.contract.price_unit
        return {
            "contractId": state.contract.contract_id,
            "symbol": symbol,
            "lastPrice": last,
            "bid1": state.contract.round_price(last - unit),
            "ask1": state.contract.round_price(last + unit),
            "volume24": volume,
            "amount24": round(sum(b.amount for b in day), 4),
            "holdVol": round(volume * 0.4),
            "lower24Price": min(b.low for b in day),
            "high24Price": max(b.h for b in day),
            "riseFallRate": round((last - opened) / opened, 4) if opened else 0.0,
            "riseFallValue": state.contract.round_price(last - opened),
            "indexPrice": last,
            "fairPrice": last,
            "fundingRate": 0.0001,
            "maxBidPrice": state.contract.round_price(last * 1.1),
            "minAskPrice": state.contract.round_price(last * 0.9),
            "timestamp": state.recent[-1].t if state.recent else self.now_ms,
        }

    def tickers_row(self, symbol: str) -> dict[str, Any]:
        """A ``push.tickers`` row: no bid1/ask1, holdVol or fundingRate, as on the wire."""
        full = self.ticker(symbol)
        keep = (
            "symbol",
            "lastPrice",
            "riseFallRate",
            "fairPrice",
            "indexPrice",
            "volume24",
            "amount24",
            "maxBidPrice",
            "minAskPrice",
            "lower24Price",
            "high24Price",
            "timestamp",
        )
        return {key: full[key] for key in keep}


def aggregate(bars: list[Bar], minutes: int) -> list[dict[str, Any]]:
    """Bars of ``minutes`` length, in MEXC's kline terms (``open`` = previous close)."""
    groups: dict[int, list[Bar]] = {}
    span = minutes * 60
    for bar in bars:
        groups.setdefault(bar.t // span * span, []).append(bar)
    rows = []
    for start, members in groups.items():
        traded = [b for b in members if b.trades] or members
        real_high = max(b.h for b in traded)
        real_low = min(b.low for b in traded)
        opened = members[0].prev_close
        rows.append(
            {
                "time": start,
                "open": opened,
                "close": members[-1].c,
                "high": max(opened, real_high),
                "low": min(opened, real_low),
                "vol": sum(b.vol for b in members),
                "amount": round(sum(b.amount for b in members), 4),
                "realOpen": traded[0].o,
                "realClose": members[-1].c,
                "realHigh": real_high,
                "realLow": real_low,
            }
        )
    return rows
