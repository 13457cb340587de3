"""The screener's state for the symbols of one pod: candles, windows, the exchange clock.

Pure (no I/O, the local clock is passed in): the service feeds it parsed frames and REST
backfills, and asks it for closed candles and the movers.

The exchange clock only moves as fast as time can: a frame whose time runs ahead of the
local clock (more than ``max_ahead_ms`` beyond the time the screener started plus the
local time since, at ``max_rate`` exchange ms per local ms) or ahead of its connection's
previous frames (more than ``max_jump_ms`` beyond them plus the local time since) is
refused with :class:`FrameTimeJump`, and so is a deal stamped after its frame. One
future-dated frame would otherwise close every minute up to its time as flat candles and
make every real deal after it late.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cdb.bot_ws.candles import ClosedCandle, SymbolCandles, minute_of
from cdb.bot_ws.frames import DealPush, ServerFrame, exchange_time
from cdb.bot_ws.window import WindowStat, top_movers, window_stat

__all__ = ["ClockBounds", "FrameTimeJump", "Screener"]


class FrameTimeJump(ValueError):
    """A frame (or a deal in it) whose time the clocks say cannot be true yet."""


@dataclass(frozen=True)
class ClockBounds:
    """How far the exchange clock may run: ``max_rate`` exchange ms per local ms (1 for
    MEXC; the simulator's speed-up for it), ``max_ahead_ms`` beyond the local clock,
    ``max_jump_ms`` beyond a connection's previous frames."""

    max_rate: float = 1.5
    max_ahead_ms: int = 300_000
    max_jump_ms: int = 10_000


class Screener:
    def __init__(
        self,
        contract_sizes: Mapping[str, float],
        lookback_min: int,
        grace_ms: int = 2_000,
        chunk_of: Mapping[str, int] | None = None,
        bounds: ClockBounds | None = None,
        *,
        local_ms: int | None = None,
        monotonic_s: float | None = None,
    ) -> None:
        self.lookback_min = lookback_min
        self.bounds = bounds or ClockBounds()
        # where the local clock stood when the screener started (wall ms, monotonic s)
        self.started = (
            int(time.time() * 1000) if local_ms is None else local_ms,
            time.monotonic() if monotonic_s is None else monotonic_s,
        )
        self.seen_at: dict[int, float] = {}  # connection → monotonic time of its clock
        self.frames_refused = 0
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

    def check_time(self, server_ms: int, chunk: int = 0, now_s: float | None = None) -> None:
        """Raise :class:`FrameTimeJump` when ``server_ms`` cannot be the exchange's time yet."""
        now = time.monotonic() if now_s is None else now_s
        b = self.bounds
        local_ms, started_s = self.started
        ahead = local_ms + b.max_ahead_ms + int((now - started_s) * 1000 * b.max_rate)
        if server_ms > ahead:
            self.frames_refused += 1
            raise FrameTimeJump(
                f"exchange time {server_ms} is {(server_ms - ahead) / 1000:.0f} s beyond"
                " what the local clock allows"
            )
        last = self.clocks.get(chunk)
        if last is None or server_ms <= last:
            return
        since = max(0.0, now - self.seen_at.get(chunk, now))
        allowed = last + b.max_jump_ms + int(since * 1000 * b.max_rate)
        if server_ms > allowed:
            self.frames_refused += 1
            raise FrameTimeJump(
                f"exchange time {server_ms} jumps {(server_ms - last) / 1000:.0f} s past the"
                f" connection's previous frame ({since:.1f} s ago)"
            )

    def on_frame(self, frame: ServerFrame, chunk: int = 0, now_s: float | None = None) -> int:
        """Take one parsed frame from connection ``chunk``; returns the deals it applied
        (late ones are not). Raises :class:`FrameTimeJump` (nothing taken) when the frame
        or one of its deals carries a time the clocks refuse."""
        ts = exchange_time(frame)
        now = time.monotonic() if now_s is None else now_s
        if ts is not None:
            self.check_time(ts, chunk, now)
        if isinstance(frame, DealPush) and frame.deals:
            latest = max(d.t for d in frame.deals)
            limit = ts if ts is not None else self.clocks.get(chunk)
            if limit is not None and latest > limit + self.bounds.max_jump_ms:
                self.frames_refused += 1
                raise FrameTimeJump(f"a deal at {latest} is stamped after its frame ({limit})")
            if ts is None:
                self.check_time(latest, chunk, now)
        if ts is not None:
            self.observe_clock(ts, chunk)
            self.seen_at[chunk] = now
        if not isinstance(frame, DealPush):
            return 0
        candles = self.candles.get(frame.symbol)
        if candles is None:
            return 0
        applied = 0
        for deal in frame.deals:
            if candles.add_deal(deal.p, deal.v, deal.t, deal.sequence()):
                applied += 1
            else:
                self.deals_ignored += 1
        newest = max(frame.deals, key=lambda d: (d.t, d.sequence()), default=None)
        if newest is not None:
            self.last_price[frame.symbol] = newest.p
        self.deals_seen += len(frame.deals)
        return applied

    def connected(
        self, symbols: Iterable[str], server_ms: int, chunk: int = 0, now_s: float | None = None
    ) -> None:
        """Connection ``chunk`` carrying ``symbols`` (re)started at ``server_ms``; raises
        :class:`FrameTimeJump` (the connection is not live) for a time the clocks refuse."""
        now = time.monotonic() if now_s is None else now_s
        self.check_time(server_ms, chunk, now)
        self.observe_clock(server_ms, chunk)
        self.seen_at[chunk] = now
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
