"""The replay loop: candle history through the live code, minute by minute, in memory.

Not a second implementation: every decision is made by the modules the services run.

* the screener's window and movers: :mod:`cdb.bot_ws.window` (``window_stat``,
  ``top_movers``) over the closed candles, published as bot_ws publishes ``market_data``;
* the signal: :class:`cdb.signal_engine.strategy.MomentumStrategy`;
* the risk decision, exposure, equity and breaker: :class:`cdb.risk_manager.rules.RiskBook`;
* the paper fills and stop-loss exits: :class:`cdb.execution_service.paper.PaperFillModel`.

Per minute, in the order the live services see it: the minute's candles (execution marks
prices and checks stops), then the movers as ``market_data`` (execution marks the price,
signal_engine decides, risk_manager sizes, execution fills). ``now`` is bar time.

Two paths give the same signals, orders, fills and books (``tests/demo/test_replay.py`` holds
them to it):

* :meth:`Replay.minute` (and :meth:`Replay.run_minutes`): every minute, every symbol's
  window, every mover through the strategy, as the services see them;
* :meth:`Replay.run_grid` (what :meth:`Replay.run` takes when the candles fit a
  :class:`~cdb.replay.grid.CandleGrid`): the windows of all minutes at once with numpy
  (:func:`~cdb.replay.grid.window_over`, the same float operations), and only the minutes
  where something can happen go through the same strategy, risk and fill code: a mover
  whose rounded change and volume can pass the strategy's threshold, and a minute whose
  low/high (or mover price) can reach an open position's stop. Everything skipped is a
  call that returns "nothing" in the minute path: a mover below the threshold makes no
  signal and changes no cooldown, and a bar that does not reach the stop closes nothing.
  A mover of a symbol still in the strategy's cooldown is skipped the same way (read
  from the strategy's own ``CooldownState``).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import groupby

import numpy as np

from cdb.bot_ws.candles import ClosedCandle
from cdb.bot_ws.window import WindowStat, market_data_of, top_movers, window_stat
from cdb.core.events import Candle, MarketData, Order, OrderResult, Signal
from cdb.execution_service.book import OpenPosition, closed_result, order_result
from cdb.execution_service.paper import FeeSchedule, PaperFillModel
from cdb.replay.grid import CandleGrid, Window, grid_of_candles, window_over
from cdb.report.books import (
    Books,
    EquityPoint,
    FillRow,
    OrderRow,
    PositionRow,
    RiskEventRow,
    SignalRow,
)
from cdb.risk_manager.rules import Rejection, RiskBook, RiskLimits
from cdb.signal_engine.strategy import CooldownState, MomentumStrategy, StrategyParams

__all__ = ["Replay", "ReplayConfig", "ReplayResult"]


@dataclass(frozen=True)
class ReplayConfig:
    """The same knobs (and defaults) as the services' settings."""

    strategy: StrategyParams = field(default_factory=StrategyParams)
    limits: RiskLimits = field(default_factory=RiskLimits)
    starting_equity: float = 10_000.0
    slippage_bps: float = 5.0
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    top_n: int = 5


@dataclass
class ReplayResult:
    """What the replay produced: the events, and the books as the report reads them."""

    candles: int = 0
    minutes: int = 0
    movers: int = 0  # market_data the screener published (gainers + losers, every minute)
    # the movers that went through the strategy: all of them on the minute path, only
    # those that could signal or stop a position on the grid path
    market_data: list[MarketData] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    results: list[OrderResult] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    books: Books = field(default_factory=lambda: Books(source="replay"))


@lru_cache(maxsize=4096)
def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _closed(candle: Candle) -> ClosedCandle:
    return ClosedCandle(
        symbol=candle.symbol,
        open_time=candle.open_time,
        open=candle.open,
        high=candle.high,
        low=candle.low,
        close=candle.close,
        volume=candle.volume,
        turnover=candle.turnover,
    )


class Replay:
    """Feed candles with :meth:`run` (or minute by minute with :meth:`minute`)."""

    def __init__(self, config: ReplayConfig | None = None) -> None:
        self.config = config or ReplayConfig()
        self.strategy = MomentumStrategy(self.config.strategy)
        self.cooldowns = CooldownState()
        self.book = RiskBook(starting_equity=self.config.starting_equity, limits=self.config.limits)
        self.fills = PaperFillModel(self.config.slippage_bps, self.config.fees)
        lookback = self.config.strategy.lookback_min
        self.lookback = lookback
        self.interval = f"{lookback}m"
        self.history: dict[str, deque[ClosedCandle]] = {}
        self.prices: dict[str, float] = {}
        self.positions: dict[str, dict[str, OpenPosition]] = {}
        self.position_rows: dict[str, int] = {}  # order id → its row in books.positions
        self.result = ReplayResult()

    # The report rows are built with ``model_construct``: every value comes from an event
    # the live code already validated, so validating it again only costs time.

    # -- driving --------------------------------------------------------------------
    def run(self, history: CandleGrid | Iterable[Candle]) -> ReplayResult:
        """The whole history: the grid path when the candles fit a grid (and this replay is
        fresh), else minute by minute. Both give the same signals, orders and books."""
        if isinstance(history, CandleGrid):
            if self._fresh:
                return self.run_grid(history)
            return self.run_minutes(history.to_candles())
        candles = list(history)
        grid = grid_of_candles(candles) if self._fresh else None
        if grid is None:
            return self.run_minutes(candles)
        return self.run_grid(grid)

    def run_minutes(self, candles: Iterable[Candle]) -> ReplayResult:
        """Minute by minute, every mover through the strategy (the path ``minute`` takes)."""
        ordered = sorted(candles, key=lambda c: (c.open_time, c.symbol))
        for _, group in groupby(ordered, key=lambda c: c.open_time):
            self.minute(list(group))
        return self.result

    @property
    def _fresh(self) -> bool:
        return not self.history and not self.result.minutes

    def minute(self, candles: list[Candle]) -> list[MarketData]:
        """One closed minute: its candles, then its movers. Returns the movers published."""
        if not candles:
            return []
        end = candles[0].open_time
        for candle in candles:
            self.on_candle(candle)
        stats = [
            stat
            for symbol, history in self.history.items()
            if (stat := window_stat(symbol, history, {}, None, end, self.lookback)) is not None
        ]
        gainers, losers = top_movers(stats, self.config.top_n)
        published = [market_data_of(s, end + 60, self.interval) for s in (*gainers, *losers)]
        for md in published:
            self.on_market_data(md)
        self.result.minutes += 1
        self.result.movers += len(published)
        return published

    # -- the grid path ------------------------------------------------------------------
    def run_grid(self, grid: CandleGrid) -> ReplayResult:
        """The whole ``grid`` on a fresh replay: the outcome of :meth:`run_minutes` on the
        same candles, stepping only through the minutes where something can happen."""
        if not self._fresh:
            raise ValueError("run_grid replays a whole history on a fresh Replay")
        window = window_over(grid, self.lookback)
        gainers = _published(window, window.pct > 0, -window.pct, self.config.top_n)
        losers = _published(window, window.pct < 0, window.pct, self.config.top_n)
        _GridSteps(self, grid, window, gainers, losers).run()
        self.result.candles += grid.candles
        self.result.minutes += int(grid.minutes.sum())
        self.result.movers += int((gainers >= 0).sum() + (losers >= 0).sum())
        return self.result

    # -- execution_service: marks and stops --------------------------------------------
    def on_candle(self, candle: Candle) -> None:
        self.result.candles += 1
        history = self.history.setdefault(candle.symbol, deque(maxlen=self.lookback + 1))
        history.append(_closed(candle))
        self.prices[candle.symbol] = candle.close
        self._watch(
            candle.symbol,
            low=candle.low,
            high=candle.high,
            open_=candle.open,
            last=candle.close,
            start=float(candle.open_time),
            end=candle.open_time + 60.0,
        )

    def on_market_data(self, md: MarketData) -> None:
        self.result.market_data.append(md)
        self.prices[md.symbol] = md.price
        at = md.timestamp + 2.0  # as execution_service: a tick of the fill's second counts
        self._watch(md.symbol, low=md.price, high=md.price, open_=None, last=md.price,
                    start=at, end=at)  # fmt: skip
        signal = self.strategy.on_market_data(md, self.cooldowns)
        if signal is not None:
            self.on_signal(signal, now=float(md.timestamp))

    def _watch(
        self,
        symbol: str,
        *,
        low: float,
        high: float,
        open_: float | None,
        last: float,
        start: float,
        end: float,
    ) -> None:
        for position in list(self.positions.get(symbol, {}).values()):
            exit_price = self.fills.exit_price_for(
                position, low=low, high=high, open_=open_, last=last, start=start, end=end
            )
            if exit_price is not None:
                self._close(position, exit_price, now=end)

    def _close(self, position: OpenPosition, exit_price: float, now: float) -> None:
        fill = self.fills.fill_close(position, exit_price)
        result = closed_result(position, fill, now)
        self.positions[position.symbol].pop(position.order_id, None)
        books = self.result.books
        books.fills.append(
            FillRow.model_construct(
                fill_id=f"{position.order_id}:close",
                order_id=position.order_id,
                symbol=position.symbol,
                side=position.side,
                kind="close",
                price=fill.price,
                quantity=fill.quantity,
                fee=fill.fee,
                realized_pnl=fill.realized_pnl,
                created_at=_when(now),
            )
        )
        index = self.position_rows.pop(position.order_id)
        books.positions[index] = books.positions[index].model_copy(
            update={
                "status": "closed",
                "exit_price": fill.price,
                "realized_pnl": fill.realized_pnl,
                "closed_at": _when(now),
            }
        )
        self._result(result, now)

    # -- risk_manager -------------------------------------------------------------------
    def on_signal(self, signal: Signal, now: float) -> None:
        self.result.signals.append(signal)
        self.result.books.signals.append(
            SignalRow.model_construct(
                signal_id=signal.signal_id,
                symbol=signal.symbol,
                side=signal.side,
                confidence=signal.confidence,
                strategy=signal.strategy,
                reason=signal.reason,
                price=signal.price,
                pct_change=signal.pct_change,
                signal_ts=_when(signal.timestamp),
            )
        )
        decision = self.book.decide(signal, now)
        if isinstance(decision, Rejection):
            self.result.rejections.append(decision)
            self.result.books.risk_events.append(
                RiskEventRow.model_construct(
                    kind=f"rejected:{decision.reason}",
                    signal_id=decision.signal_id,
                    reason=decision.detail,
                    created_at=_when(now),
                )
            )
            return
        self.on_order(decision, now)

    def _result(self, result: OrderResult, now: float) -> None:
        self.result.results.append(result)
        effect = self.book.apply_result(result, now)
        if effect.applied and result.status in ("closed", "rejected"):
            # a finished position weighs nothing in any later decision (not active), but
            # the book's exposure and one-per-symbol checks walk every position it holds
            self.book.positions.pop(result.order_id, None)
        if effect.breaker_tripped and self.book.today is not None:
            self.result.books.risk_events.append(
                RiskEventRow.model_construct(
                    kind="circuit_breaker",
                    reason=self.book.today.breaker_reason,
                    created_at=_when(now),
                )
            )
        if effect.applied:
            self.result.books.equity.append(
                EquityPoint.model_construct(
                    equity=self.book.equity,
                    realized_pnl=self.book.net_pnl,
                    exposure=self.book.exposure,
                    reason=f"{result.status}:{result.order_id}",
                    recorded_at=_when(now),
                )
            )

    # -- execution_service: paper fills -------------------------------------------------
    def on_order(self, order: Order, now: float) -> None:
        self.result.orders.append(order)
        fill = self.fills.fill_open(order, self.prices.get(order.symbol))
        books = self.result.books
        books.orders.append(
            OrderRow.model_construct(
                order_id=order.order_id,
                signal_id=order.signal_id,
                symbol=order.symbol,
                side=order.side,
                quantity=order.quantity,
                notional=order.notional,
                price=order.price,
                stop_loss=order.stop_loss,
                status="filled",
                created_at=_when(now),
            )
        )
        books.fills.append(
            FillRow.model_construct(
                fill_id=f"{order.order_id}:open",
                order_id=order.order_id,
                symbol=order.symbol,
                side=order.side,
                kind="open",
                price=fill.price,
                quantity=fill.quantity,
                fee=fill.fee,
                created_at=_when(now),
            )
        )
        self.position_rows[order.order_id] = len(books.positions)
        books.positions.append(
            PositionRow.model_construct(
                position_id=order.order_id,
                order_id=order.order_id,
                symbol=order.symbol,
                side=order.side,
                quantity=fill.quantity,
                entry_price=fill.price,
                stop_loss=order.stop_loss,
                status="open",
                opened_at=_when(now),
            )
        )
        self.positions.setdefault(order.symbol, {})[order.order_id] = OpenPosition(
            order.order_id,
            order.symbol,
            order.side,
            fill.quantity,
            fill.price,
            order.stop_loss,
            now,
        )
        self._result(order_result(order, "filled", fill, "", "paper", now), now)


def _published(window: Window, side: np.ndarray, key: np.ndarray, n: int) -> np.ndarray:
    """Each cell's place among its minute's published movers of one side (``top_movers``:
    by ``key``, ties to the first symbol, i.e. the first column), -1 when not published."""
    ok = window.valid & side
    order = np.argsort(np.where(ok, key, np.inf), axis=1, kind="stable")[:, :n]
    rank = np.full(ok.shape, -1, dtype=np.int64)
    rank[np.arange(ok.shape[0])[:, None], order] = np.arange(order.shape[1])[None, :]
    rank[~ok] = -1
    return rank


class _GridSteps:
    """The grid path's loop: the rows where a mover can signal or a stop can be hit."""

    def __init__(
        self,
        replay: Replay,
        grid: CandleGrid,
        window: Window,
        gainers: np.ndarray,
        losers: np.ndarray,
    ) -> None:
        self.replay = replay
        self.grid = grid
        self.window = window
        self.rank = (gainers, losers)
        self.column = {symbol: col for col, symbol in enumerate(grid.symbols)}
        params = replay.strategy.params
        # a superset of what the strategy can take: MarketData rounds pct_change to 4 and
        # volume to 2 decimals, so a figure just short of the limit may round up to it
        pct_margin = 1e-4 + 1e-9 * abs(params.threshold_pct)
        volume_ok = window.volume >= params.min_volume - (0.01 + 1e-9 * abs(params.min_volume))
        can_long = (gainers >= 0) & (window.pct >= params.threshold_pct - pct_margin) & volume_ok
        can_short = (losers >= 0) & (window.pct <= -params.threshold_pct + pct_margin) & volume_ok
        if not params.allow_short:
            can_short[:] = False
        rows_l, cols_l = np.nonzero(can_long)
        rows_s, cols_s = np.nonzero(can_short)
        rows = np.concatenate([rows_l, rows_s])
        sides = np.concatenate([np.zeros_like(rows_l), np.ones_like(rows_s)])
        cols = np.concatenate([cols_l, cols_s])
        ranks = np.concatenate([gainers[rows_l, cols_l], losers[rows_s, cols_s]])
        order = np.lexsort((ranks, sides, rows))
        self.feed: list[tuple[int, int, int, int]] = list(
            zip(
                rows[order].tolist(),
                sides[order].tolist(),
                ranks[order].tolist(),
                cols[order].tolist(),
                strict=True,
            )
        )
        # the lowest / highest price a stop can see in a cell: the bar's low / high or
        # close (a bar older than the position counts by its close), or the mover's price
        present, price = grid.present, window.price
        low = np.where(present, np.fmin(grid.low, grid.close), np.inf)
        low = np.where(window.valid & (price < low), price, low)
        high = np.where(present, np.fmax(grid.high, grid.close), -np.inf)
        high = np.where(window.valid & (price > high), price, high)
        self.low = np.ascontiguousarray(low.T)
        self.high = np.ascontiguousarray(high.T)
        self.heap: list[tuple[int, str, int]] = []
        self.due: dict[str, int] = {}

    def next_reach(self, position: OpenPosition, col: int, row: int) -> int | None:
        """The first row from ``row`` on whose prices reach the position's stop."""
        if position.side == "long":
            reach = self.low[col, row:] <= position.stop_loss
        else:
            reach = self.high[col, row:] >= position.stop_loss
        if reach.shape[0] == 0:
            return None
        first = int(reach.argmax())
        return row + first if reach[first] else None

    def schedule(self, row: int, cols: Iterable[int]) -> None:
        """Watch the open positions of ``cols`` that are new or were due at ``row``."""
        for col in cols:
            for position in self.replay.positions.get(self.grid.symbols[col], {}).values():
                if self.due.get(position.order_id, -1) > row:
                    continue
                reach = self.next_reach(position, col, row + 1)
                if reach is None:
                    self.due.pop(position.order_id, None)
                else:
                    self.due[position.order_id] = reach
                    heapq.heappush(self.heap, (reach, position.order_id, col))

    def run(self) -> None:
        replay, grid, window = self.replay, self.grid, self.window
        symbols, feed, heap = grid.symbols, self.feed, self.heap
        cooldown = replay.strategy.params.effective_cooldown_s
        next_feed = 0
        never = grid.rows
        while True:
            row = min(feed[next_feed][0] if next_feed < len(feed) else never,
                      heap[0][0] if heap else never)  # fmt: skip
            if row >= never:
                return
            end = grid.start + 60 * row
            due: set[int] = set()
            while heap and heap[0][0] == row:
                _, order_id, col = heapq.heappop(heap)
                if self.due.get(order_id) == row:
                    due.add(col)
            for col in sorted(due):  # the minute's candles, in symbol order
                if grid.present[row, col]:
                    replay._watch(
                        symbols[col],
                        low=float(grid.low[row, col]),
                        high=float(grid.high[row, col]),
                        open_=float(grid.open[row, col]),
                        last=float(grid.close[row, col]),
                        start=float(end),
                        end=end + 60.0,
                    )
            movers: list[tuple[int, int, int]] = []
            stamp = end + 60
            while next_feed < len(feed) and feed[next_feed][0] == row:
                side, rank_, col = feed[next_feed][1:]
                next_feed += 1
                # the strategy's cooldown: a symbol that signalled less than cooldown_s
                # ago makes no signal now (a later window has another signal id)
                quiet = replay.cooldowns.last.get(symbols[col])
                if col in due or quiet is None or abs(stamp - quiet.timestamp) >= cooldown:
                    movers.append((side, rank_, col))
            fed = {col for _, _, col in movers}
            for col in due - fed:  # a due symbol's mover: its price may reach the stop
                for side, rank in enumerate(self.rank):
                    if rank[row, col] >= 0:
                        movers.append((side, int(rank[row, col]), col))
            movers.sort()
            for _, _, col in movers:  # gainers by rank, then losers, as published
                stat = WindowStat(
                    symbols[col],
                    float(window.price[row, col]),
                    float(window.pct[row, col]),
                    float(window.volume[row, col]),
                )
                replay.on_market_data(market_data_of(stat, stamp, replay.interval))
            self.schedule(row, due | {col for _, _, col in movers})
