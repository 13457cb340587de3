"""1-minute candles from deals, in order, with no minute missing.

Pure: deals and the exchange clock in, closed candles out. A minute closes once the
exchange clock (the ``ts`` of any frame, the pong time) has passed its end by a grace
period, so deals that arrive out of order within the grace still count, by trade time
(ties by trade id). Minutes the screener could not see whole — before the first connect,
during a gap, the minute of a reconnect — are taken from REST klines instead (backfill);
minutes without trades become flat candles at the previous close, as MEXC's klines are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ClosedCandle", "OpenBar", "SymbolCandles", "minute_of"]


def minute_of(ms: int) -> int:
    """The open time (unix seconds) of the minute holding ``ms``."""
    return ms // 60_000 * 60


@dataclass(frozen=True, slots=True)
class ClosedCandle:
    symbol: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # contracts
    turnover: float  # quote currency
    source: str = "deals"  # deals | rest | flat


@dataclass(slots=True)
class OpenBar:
    first: tuple[int, int]
    last: tuple[int, int]
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float


class SymbolCandles:
    """One symbol's candle builder. ``next_minute`` is the next candle to emit."""

    def __init__(self, symbol: str, contract_size: float = 1.0, grace_ms: int = 2_000) -> None:
        self.symbol = symbol
        self.contract_size = contract_size
        self.grace_ms = grace_ms
        self.next_minute: int | None = None
        self.trusted_from: int | None = None
        self.last_close: float | None = None
        self.bars: dict[int, OpenBar] = {}
        self.late_deals = 0

    # ----- input ------------------------------------------------------------------------

    def connected(self, server_ms: int, history_from: int) -> None:
        """A (re)connect at ``server_ms``: the current minute and any gap need backfill.

        ``history_from`` (unix seconds) is where the very first candle starts.
        """
        current = minute_of(server_ms)
        self.trusted_from = current + 60
        if self.next_minute is None:
            self.next_minute = min(history_from // 60 * 60, current)
        self.bars = {m: b for m, b in self.bars.items() if m >= self.trusted_from}

    def add_deal(self, price: float, contracts: float, t_ms: int, sequence: int = 0) -> bool:
        """Count a trade; ``False`` when it is for a minute already closed (too late)."""
        minute = minute_of(t_ms)
        if self.trusted_from is None or minute < self.trusted_from:
            return False  # not connected yet, or a minute that comes from backfill
        if self.next_minute is not None and minute < self.next_minute:
            self.late_deals += 1
            return False
        key = (t_ms, sequence)
        bar = self.bars.get(minute)
        turnover = contracts * self.contract_size * price
        if bar is None:
            self.bars[minute] = OpenBar(key, key, price, price, price, price, contracts, turnover)
            return True
        if key < bar.first:
            bar.first, bar.open = key, price
        if key >= bar.last:
            bar.last, bar.close = key, price
        if price > bar.high:
            bar.high = price
        if price < bar.low:
            bar.low = price
        bar.volume += contracts
        bar.turnover += turnover
        return True

    # ----- output -----------------------------------------------------------------------

    def last_closable(self, watermark_ms: int) -> int:
        """The newest minute whose end plus grace the exchange clock has passed."""
        return minute_of(watermark_ms - self.grace_ms) - 60

    def close_due(self, watermark_ms: int) -> list[ClosedCandle]:
        """Every minute that is over, in order; stops at a minute that awaits backfill."""
        out: list[ClosedCandle] = []
        limit = self.last_closable(watermark_ms)
        while self.next_minute is not None and self.next_minute <= limit:
            minute = self.next_minute
            if self.trusted_from is None or minute < self.trusted_from:
                break
            bar = self.bars.pop(minute, None)
            if bar is not None:
                candle = ClosedCandle(
                    self.symbol,
                    minute,
                    bar.open,
                    bar.high,
                    bar.low,
                    bar.close,
                    bar.volume,
                    bar.turnover,
                )
            elif self.last_close is not None:
                p = self.last_close
                candle = ClosedCandle(self.symbol, minute, p, p, p, p, 0.0, 0.0, "flat")
            else:
                self.next_minute += 60  # nothing known yet: no price to carry
                continue
            out.append(candle)
            self.last_close = candle.close
            self.next_minute = minute + 60
        return out

    def backfill_range(self, watermark_ms: int) -> tuple[int, int] | None:
        """The closed minutes (first, last open time) that must come from REST now."""
        if self.next_minute is None or self.trusted_from is None:
            return None
        last = min(self.trusted_from - 60, self.last_closable(watermark_ms))
        return (self.next_minute, last) if self.next_minute <= last else None

    def apply_backfill(self, candles: Iterable[ClosedCandle], through: int) -> list[ClosedCandle]:
        """REST bars for minutes up to ``through``; returns the candles now closed, in order.

        A minute REST did not return is carried flat from the previous close.
        """
        by_minute = {c.open_time: c for c in candles}
        out: list[ClosedCandle] = []
        while self.next_minute is not None and self.next_minute <= through:
            minute = self.next_minute
            if self.trusted_from is not None and minute >= self.trusted_from:
                break
            candle = by_minute.get(minute)
            if candle is None:
                if self.last_close is None:
                    self.next_minute += 60
                    continue
                p = self.last_close
                candle = ClosedCandle(self.symbol, minute, p, p, p, p, 0.0, 0.0, "flat")
            out.append(candle)
            self.last_close = candle.close
            self.next_minute = minute + 60
        return out

    def open_bars(self) -> dict[int, OpenBar]:
        return self.bars
