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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby

from cdb.bot_ws.candles import ClosedCandle
from cdb.bot_ws.window import market_data_of, top_movers, window_stat
from cdb.core.events import Candle, MarketData, Order, OrderResult, Signal
from cdb.execution_service.book import OpenPosition, closed_result, order_result
from cdb.execution_service.paper import FeeSchedule, PaperFillModel
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
    market_data: list[MarketData] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    results: list[OrderResult] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    books: Books = field(default_factory=lambda: Books(source="replay"))


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
        self.result = ReplayResult()

    # -- driving --------------------------------------------------------------------
    def run(self, candles: Iterable[Candle]) -> ReplayResult:
        ordered = sorted(candles, key=lambda c: (c.open_time, c.symbol))
        for _, group in groupby(ordered, key=lambda c: c.open_time):
            self.minute(list(group))
        return self.result

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
        return published

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
            FillRow(
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
        for index, row in enumerate(books.positions):
            if row.order_id == position.order_id:
                books.positions[index] = row.model_copy(
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
            SignalRow(
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
                RiskEventRow(
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
        if effect.breaker_tripped and self.book.today is not None:
            self.result.books.risk_events.append(
                RiskEventRow(
                    kind="circuit_breaker",
                    reason=self.book.today.breaker_reason,
                    created_at=_when(now),
                )
            )
        if effect.applied:
            self.result.books.equity.append(
                EquityPoint(
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
            OrderRow(
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
            FillRow(
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
        books.positions.append(
            PositionRow(
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
