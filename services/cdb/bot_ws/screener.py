"""The screener's state for the symbols of one pod: candles, windows, the exchange clock.

Pure (no I/O): the service feeds it parsed frames and REST backfills, and asks it for
closed candles and the movers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from cdb.bot_ws.candles import ClosedCandle, SymbolCandles, minute_of
from cdb.bot_ws.frames import DealPush, ServerFrame, exchange_time
from cdb.bot_ws.window import WindowStat, top_movers, window_stat

__all__ = ["Screener"]


class Screener:
    def __init__(
        self,
        contract_sizes: Mapping[str, float],
        lookback_min: int,
        grace_ms: int = 2_000,
        chunk_of: Mapping[str, int] | None = None,
    ) -> None:
        self.lookback_min = lookback_min
        # each connection has its own view of the exchange clock: a minute of its symbols
        # closes by the time that connection has seen, never by a faster sibling's
        self.chunk_of = dict(chunk_of or {})
        self.clocks: dict[int, int] = {}
        self.candles = {s: SymbolCandles(s, size, grace_ms) for s, size in contract_sizes.items()}
        self.history: dict[str, deque[ClosedCandle]] = {
            s: deque(maxlen=lookback_min + 1) for s in contract_sizes
        }
        self.last_price: dict[str, float] = {}
        self.watermark_ms = 0
        self.deals_seen = 0
        self.deals_ignored = 0

    @property
    def symbols(self) -> list[str]:
        return list(self.candles)

    def set_lookback(self, minutes: int) -> None:
        """Apply a new lookback live; longer windows fill as minutes pass."""
        self.lookback_min = minutes
        for symbol, candles in self.history.items():
            self.history[symbol] = deque(candles, maxlen=minutes + 1)

    def observe_clock(self, server_ms: int, chunk: int = 0) -> None:
        if server_ms > self.clocks.get(chunk, 0):
            self.clocks[chunk] = server_ms
        if server_ms > self.watermark_ms:
            self.watermark_ms = server_ms

    def clock_of(self, symbol: str) -> int:
        return self.clocks.get(self.chunk_of.get(symbol, 0), 0)

    def on_frame(self, frame: ServerFrame, chunk: int = 0) -> int:
        """Take one parsed frame from connection ``chunk``; returns the deals it carried."""
        ts = exchange_time(frame)
        if ts is not None:
            self.observe_clock(ts, chunk)
        if not isinstance(frame, DealPush):
            return 0
        candles = self.candles.get(frame.symbol)
        if candles is None:
            return 0
        for deal in frame.deals:
            if not candles.add_deal(deal.p, deal.v, deal.t, deal.sequence()):
                self.deals_ignored += 1
        newest = max(frame.deals, key=lambda d: (d.t, d.sequence()), default=None)
        if newest is not None:
            self.last_price[frame.symbol] = newest.p
        self.deals_seen += len(frame.deals)
        return len(frame.deals)

    def connected(self, symbols: Iterable[str], server_ms: int, chunk: int = 0) -> None:
        """Connection ``chunk`` carrying ``symbols`` (re)started at ``server_ms``."""
        self.observe_clock(server_ms, chunk)
        history_from = minute_of(server_ms) - self.lookback_min * 60
        for symbol in symbols:
            self.candles[symbol].connected(server_ms, history_from)

    def close_due(self, symbols: Iterable[str] | None = None) -> list[ClosedCandle]:
        closed: list[ClosedCandle] = []
        for symbol in self.candles if symbols is None else symbols:
            for candle in self.candles[symbol].close_due(self.clock_of(symbol)):
                self._remember(candle)
                closed.append(candle)
        return closed

    def backfill_range(self, symbol: str) -> tuple[int, int] | None:
        return self.candles[symbol].backfill_range(self.clock_of(symbol))

    def apply_backfill(
        self, symbol: str, candles: Iterable[ClosedCandle], through: int
    ) -> list[ClosedCandle]:
        closed = self.candles[symbol].apply_backfill(candles, through)
        for candle in closed:
            self._remember(candle)
        return closed

    def _remember(self, candle: ClosedCandle) -> None:
        self.history[candle.symbol].append(candle)
        self.last_price.setdefault(candle.symbol, candle.close)

    def window_end(self) -> int:
        return minute_of(self.watermark_ms)

    def stats(self) -> list[WindowStat]:
        end = self.window_end()
        out = []
        for symbol, candles in self.candles.items():
            stat = window_stat(
                symbol,
                self.history[symbol],
                candles.open_bars(),
                self.last_price.get(symbol),
                end,
                self.lookback_min,
            )
            if stat is not None:
                out.append(stat)
        return out

    def movers(self, n: int = 5) -> tuple[list[WindowStat], list[WindowStat]]:
        return top_movers(self.stats(), n)
