"""execution_service: ``orders`` → fills, positions and ``order_results``; stop-loss watch.

Paper (default): the order row, its entry fill, the position and the ``order_result``
(outbox) are written in one transaction keyed by ``order_id``; the result is published
after the commit. Prices from ``candles`` and ``market_data`` feed the fill price and the
stop-loss watch; a stop closes the position (update-if-open, close fill, result) in one
transaction. Live: see :mod:`cdb.execution_service.live`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal

from prometheus_client import Counter, Gauge, Histogram

from cdb.core.bus import PRICE_DONE_TTL_S, TRANSIENT_ERRORS, Consumer, Refused, sleep_unless
from cdb.core.control import AppliedControl, apply_control, current_control, load_control
from cdb.core.db import DatabaseError
from cdb.core.events import Candle, Control, MarketData, Order, Stream
from cdb.core.metrics import LATENCY_BUCKETS
from cdb.core.outbox import Outbox
from cdb.core.service import Service, public_config
from cdb.execution_service import store
from cdb.execution_service.live import MAINTENANCE_NOTE, LiveExecutor, LiveOutcome
from cdb.execution_service.mexc_client import MexcError, MexcPrivateClient
from cdb.execution_service.paper import (
    FeeSchedule,
    Fill,
    OpenPosition,
    PaperFillModel,
    closed_result,
    order_result,
)
from cdb.execution_service.settings import ExecutionSettings

__all__ = ["ExecutionService"]

log = logging.getLogger("cdb.execution_service")

MAX_SUBMITS = 3  # sends of one live order MEXC cannot find, before it stays unknown


class ExecutionMetrics:
    def __init__(self, registry: Any) -> None:
        r = registry
        self.orders = Counter("execution_orders_total", "Orders by outcome", ["status"], registry=r)
        self.fills = Counter("execution_fills_total", "Fills (entries and exits)", registry=r)
        self.fees = Counter("execution_fees_usdt_total", "Fees paid (USDT)", registry=r)
        self.realized = Gauge("execution_realized_pnl_usdt", "Realised PnL (USDT)", registry=r)
        self.open_positions = Gauge("execution_open_positions", "Open positions", registry=r)
        self.stop_closes = Counter(
            "execution_stop_loss_closes_total", "Positions closed at their stop", registry=r
        )
        self.latency = Histogram(
            "execution_order_latency_seconds",
            "Order event time to fill",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


class ExecutionService(Service[ExecutionSettings]):
    name = "execution_service"
    watches_input = False  # quiet order streams are normal

    def __init__(self, settings: ExecutionSettings, kernel: Any) -> None:
        super().__init__(settings, kernel)
        self.metrics = ExecutionMetrics(kernel.metrics.registry)
        self.model = PaperFillModel(
            settings.paper_slippage_bps,
            FeeSchedule(taker_rate=settings.taker_fee_rate, maker_rate=settings.maker_fee_rate),
        )
        self.outbox = Outbox(self.name, kernel.database, kernel.bus)
        self.prices: dict[str, float] = {}
        self.positions: dict[str, dict[str, OpenPosition]] = {}
        # held by a reload from its read to its swap, and by every open and close of a
        # position in memory: a snapshot read before a fill (or a stop) never undoes it
        self.positions_lock = asyncio.Lock()
        self.control: AppliedControl | None = None
        self.paused = False
        self.realized = 0.0
        self.live: LiveExecutor | None = None
        if settings.trading_mode == "live":
            client = MexcPrivateClient(
                settings.mexc_rest_url,
                settings.mexc_api_key,
                settings.mexc_api_secret,
                recv_window_s=settings.mexc_recv_window_s,
                timeout_s=settings.mexc_timeout_s,
            )
            self.live = LiveExecutor(client, leverage=settings.mexc_leverage)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self._adopt(await load_control(self.kernel.database, self.name))
        await self._reload_positions()
        await self.outbox.flush()
        if self.live is not None:
            log.warning(
                "LIVE trading: orders go to MEXC", extra={"url": self.settings.mexc_rest_url}
            )
            await self.reconcile_live()

    async def close(self) -> None:
        if self.live is not None:
            await self.live.client.close()

    def consumers(self) -> Sequence[Consumer[Any]]:
        return [
            self.consumer(Stream.ORDERS, Order, self.on_order),
            self.consumer(
                Stream.CANDLES,
                Candle,
                self.on_candle,
                start="$",
                touches_health=False,
                done_ttl_s=PRICE_DONE_TTL_S,
            ),
            self.consumer(
                Stream.MARKET_DATA,
                MarketData,
                self.on_market_data,
                start="$",
                touches_health=False,
                done_ttl_s=PRICE_DONE_TTL_S,
            ),
            self.consumer(Stream.CONTROL, Control, self.on_control, touches_health=False),
        ]

    def tasks(self) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        return [self._housekeeping]

    async def _housekeeping(self) -> None:
        """Outbox retries, positions opened by replicas, live reconciliation."""
        while not self.kernel.stop.is_set():
            await sleep_unless(self.kernel.stop, self.settings.live_poll_interval_s)
            if self.kernel.stop.is_set():
                return
            try:
                await self.outbox.flush()
                await self._reload_positions()
                if self.live is not None:
                    await self.reconcile_live()
            except Exception as error:  # retried on the next round
                log.warning("housekeeping failed", extra={"error": str(error)[:300]})

    # -- orders --------------------------------------------------------------------
    async def on_order(self, order: Order) -> None:
        if self.live is not None:
            await self._live_order(order)
        else:
            await self._paper_order(order)
        await self.outbox.flush()

    async def _paper_order(self, order: Order) -> None:
        mode: Literal["paper", "live"] = "paper"
        opened_at: float | None = None
        async with self.kernel.database.connection() as conn, conn.transaction():
            if await store.order_status(conn, order.order_id) is not None:
                return  # already executed: its result is in the outbox
            await self._authorised(conn, order)
            self._adopt(await current_control(conn, self.name))  # a peer may have applied it
            if self.paused:
                if not await store.insert_order(conn, order, "rejected", mode, "trading is paused"):
                    return  # a replica executed it in the meantime
                await self.outbox.add(
                    conn,
                    order_result(order, "rejected", None, "trading is paused", mode, time.time()),
                    Stream.ORDER_RESULTS,
                )
                status, fill = "rejected", None
            else:
                fill = self.model.fill_open(order, self.prices.get(order.symbol))
                if not await store.insert_order(conn, order, "filled", mode):
                    return  # a replica executed it in the meantime
                opened_at = await store.open_position(conn, order, fill)
                await self.outbox.add(
                    conn,
                    order_result(order, "filled", fill, "", mode, time.time()),
                    Stream.ORDER_RESULTS,
                )
                status = "filled"
        await self._count(order, status, fill, opened_at)

    async def _authorised(self, conn: store.Conn, order: Order) -> None:
        """Only what risk_manager approved is executed: the order must equal, field for
        field (its event id aside), the order of an approved decision row. Anything else
        (forged, altered, never decided) is refused and dead-lettered with the reason."""
        approved = await store.approved_order(conn, order.signal_id)
        if approved is None:
            reason = "no approved risk decision for this order's signal"
        elif approved.model_dump(exclude={"event_id"}) != order.model_dump(exclude={"event_id"}):
            reason = "the order differs from the one risk_manager approved"
        else:
            return
        self.metrics.orders.labels("refused").inc()
        log.error(
            "order refused: not authorised by risk_manager",
            extra={"order_id": order.order_id, "signal_id": order.signal_id, "reason": reason},
        )
        raise Refused(f"{reason} (order {order.order_id}, signal {order.signal_id})")

    async def _live_order(self, order: Order) -> None:
        async with self.kernel.database.connection() as conn, conn.transaction():
            if await store.order_status(conn, order.order_id) is None:
                await self._authorised(conn, order)
                await store.insert_order(conn, order, "pending", "live")  # the intent first
        await self._drive_live(order)

    async def reconcile_live(self) -> None:
        """Every pending or unknown live order is driven one step (see ``_live_step``)."""
        async with self.kernel.database.connection() as conn:
            orders = await store.live_orders_to_reconcile(conn)
        for order in orders:
            try:
                await self._drive_live(order)
            except TRANSIENT_ERRORS as error:  # MEXC or a store unreachable: next round
                log.warning(
                    "live order not reconciled now",
                    extra={"order_id": order.order_id, "error": str(error)[:300]},
                )
        await self.outbox.flush()

    async def _drive_live(self, order: Order) -> None:
        """One step towards a known outcome under the order's advisory lock, so replicas,
        redeliveries and housekeeping never send or settle one order at the same time.
        Busy elsewhere: left to that worker (housekeeping looks again if it dies). The lock's
        connection runs in autocommit, so each store call below is durable when it returns
        (a submit is counted before the POST)."""
        async with self.kernel.database.connection() as conn:
            await conn.set_autocommit(True)
            try:
                if not await store.lock_order(conn, order.order_id):
                    return
                try:
                    outcome = await self._live_step(conn, order)
                    if outcome is not None:
                        await self._settle_live(order, outcome)
                finally:
                    await store.unlock_order(conn, order.order_id)
            finally:
                with contextlib.suppress(DatabaseError):  # a broken connection is discarded
                    await conn.set_autocommit(False)

    async def _live_step(self, conn: store.Conn, order: Order) -> LiveOutcome | None:
        """Never submitted: send it (paused: reject it). Submitted before, or unknown: look
        it up; only when MEXC does not know it, send it again with the same externalOid,
        at most ``MAX_SUBMITS`` times in all. ``None``: nothing to settle now."""
        assert self.live is not None
        state = await store.live_state(conn, order.order_id)
        if state is None or state.status not in ("pending", "unknown"):
            return None
        self._adopt(await current_control(conn, self.name))
        if state.submit_attempts == 0:
            if self.paused:
                return LiveOutcome("rejected", reason="trading is paused")
            # MEXC has never seen this id: whatever stops the send is a rejection
            return await self._submit(conn, order, refused="rejected")
        try:
            found = await self.live.lookup(order)
        except MexcError as error:  # e.g. a revoked key: say so, keep the order as it is
            log.error(
                "cannot reconcile live order",
                extra={"order_id": order.order_id, "error": str(error)},
            )
            return None
        if found.kind != "unknown" or state.submit_attempts >= MAX_SUBMITS or self.paused:
            return found  # unknown stays unknown until proven; looked up every round
        # sent before, and MEXC cannot find it: the earlier submit may still surface
        return await self._submit(conn, order, refused="unknown")

    async def _submit(
        self, conn: store.Conn, order: Order, refused: Literal["rejected", "unknown"]
    ) -> LiveOutcome:
        """Count the submit, then send; what stops the send becomes a ``refused`` outcome."""
        assert self.live is not None
        context = "" if refused == "rejected" else "sent before, not found at MEXC; resend: "
        body = await self.live.prepare(order)
        if isinstance(body, LiveOutcome):
            return LiveOutcome(refused, reason=context + body.reason)
        await store.count_submit(conn, order.order_id)
        try:
            return await self.live.submit(order, body)
        except MexcError as error:
            return LiveOutcome(refused, reason=f"{context}{error} ({MAINTENANCE_NOTE})")

    async def _settle_live(self, order: Order, outcome: LiveOutcome) -> None:
        if outcome.kind == "open":
            return  # stays pending; looked up again by housekeeping
        kind = outcome.kind
        if kind == "filled" and outcome.fill is None:
            kind = "rejected"
        async with self.kernel.database.connection() as conn, conn.transaction():
            current = await store.order_status(conn, order.order_id)
            if current not in ("pending", "unknown") or current == kind:
                return
            await store.set_order_status(conn, order.order_id, kind, outcome.reason)
            opened_at = None
            if kind == "filled":
                assert outcome.fill is not None
                opened_at = await store.open_position(conn, order, outcome.fill)
            await self.outbox.add(
                conn,
                order_result(order, kind, outcome.fill, outcome.reason, "live", time.time()),
                Stream.ORDER_RESULTS,
            )
        if kind == "unknown":
            log.error(
                "live order unknown to MEXC; kept as unknown until proven",
                extra={"order_id": order.order_id},
            )
        elif kind == "rejected":
            log.error(
                "live order refused", extra={"order_id": order.order_id, "reason": outcome.reason}
            )
        await self._count(order, kind, outcome.fill, opened_at)

    async def _count(
        self, order: Order, status: str, fill: Fill | None, opened_at: float | None
    ) -> None:
        self.metrics.orders.labels(status).inc()
        if fill is None or status != "filled":
            return
        self.metrics.fills.inc()
        self.metrics.fees.inc(fill.fee)
        self.metrics.latency.observe(max(0.0, time.time() - order.timestamp))
        if opened_at is None:
            return  # no position was written with it
        position = OpenPosition(
            order.order_id,
            order.symbol,
            order.side,
            fill.quantity,
            fill.price,
            order.stop_loss,
            opened_at,
        )
        async with self.positions_lock:
            self.positions.setdefault(order.symbol, {})[order.order_id] = position
        self._show_positions()

    # -- prices and stops ----------------------------------------------------------
    async def on_candle(self, candle: Candle) -> None:
        self.prices[candle.symbol] = candle.close
        await self._watch(
            candle.symbol,
            low=candle.low,
            high=candle.high,
            open_=candle.open,
            event_start=float(candle.open_time),
            event_end=candle.open_time + 60.0,
            last=candle.close,
        )

    async def on_market_data(self, md: MarketData) -> None:
        self.prices[md.symbol] = md.price
        at = md.timestamp + 2.0  # whole seconds: a tick of the fill's second counts
        await self._watch(
            md.symbol,
            low=md.price,
            high=md.price,
            open_=None,
            event_start=at,
            event_end=at,
            last=md.price,
        )

    async def _watch(
        self,
        symbol: str,
        *,
        low: float,
        high: float,
        open_: float | None,
        event_start: float,
        event_end: float,
        last: float,
    ) -> None:
        """Close positions whose stop this price (a bar or a tick) reached. A bar that began
        before the position opened counts only with its close: its low/high may be older."""
        if self.live is not None:
            return  # live positions carry their stop at MEXC (stopLossPrice)
        for position in list(self.positions.get(symbol, {}).values()):
            exit_price = self.model.exit_price_for(
                position, low=low, high=high, open_=open_, last=last,
                start=event_start, end=event_end,
            )  # fmt: skip
            if exit_price is not None:
                await self._close(position, exit_price)

    async def _close(self, position: OpenPosition, exit_price: float) -> None:
        fill = self.model.fill_close(position, exit_price)
        async with self.kernel.database.connection() as conn, conn.transaction():
            closed = await store.close_position(conn, position, fill)
            if closed:
                result = closed_result(position, fill, time.time())
                await self.outbox.add(conn, result, Stream.ORDER_RESULTS)
        async with self.positions_lock:
            self.positions.get(position.symbol, {}).pop(position.order_id, None)
            if closed:  # read, not added: a reload may have read this close already
                async with self.kernel.database.connection() as conn:
                    self.realized = await store.realized_pnl(conn)
        self._show_positions()
        if closed:
            self.metrics.fills.inc()
            self.metrics.fees.inc(fill.fee)
            self.metrics.stop_closes.inc()
            self.metrics.realized.set(self.realized)
            log.info(
                "stop-loss close",
                extra={"order_id": position.order_id, "pnl": round(fill.realized_pnl, 6)},
            )
        await self.outbox.flush()

    async def _reload_positions(self) -> None:
        """Positions from the store (a replica's fills and stops too). Under the lock from
        read to swap: a fill or stop that commits meanwhile lands in memory after the swap,
        so a snapshot taken before it cannot drop a new position from the stop watch."""
        async with self.positions_lock:
            async with self.kernel.database.connection() as conn:
                positions = await store.load_open_positions(conn)
                self.realized = await store.realized_pnl(conn)
            fresh: dict[str, dict[str, OpenPosition]] = {}
            for p in positions:
                fresh.setdefault(p.symbol, {})[p.order_id] = p
            self.positions = fresh
        self.metrics.realized.set(self.realized)
        self._show_positions()

    def _show_positions(self) -> None:
        self.metrics.open_positions.set(sum(len(v) for v in self.positions.values()))

    # -- control and status --------------------------------------------------------
    async def on_control(self, control: Control) -> None:
        applied = await apply_control(self.kernel.database, self.name, control)
        if applied is None:
            return
        self._adopt(applied)
        log.info("live config applied", extra={"control": applied.describe()})

    def _adopt(self, control: AppliedControl | None) -> None:
        """``paused`` from the stored live config (not paused where none was applied)."""
        if control is None or not control.supersedes(self.control):
            return
        self.control = control
        self.paused = bool(control.settings.paused)

    def status(self) -> dict[str, Any]:
        return {
            "config": public_config(self.settings),
            "in_force": {
                "trading_mode": self.settings.trading_mode,
                "paused": self.paused,
                "slippage_bps": self.settings.paper_slippage_bps,
                "taker_fee_rate": self.settings.taker_fee_rate,
                "maker_fee_rate": self.settings.maker_fee_rate,
            },
            "control": self.control.describe() if self.control else None,
            "open_positions": sum(len(v) for v in self.positions.values()),
            "realized_pnl_usdt": round(self.realized, 6),
        }
