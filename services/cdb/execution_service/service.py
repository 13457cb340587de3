"""execution_service: ``orders`` → fills, positions and ``order_results``; stop-loss watch;
reconciliation with the venue.

The service keeps the transaction, the outbox and the metrics; where orders go is the
venue's business (:mod:`cdb.execution_service.venue`: paper by default, MEXC live). Every
order takes the same road, whichever the venue, and reads top to bottom below:

1. ``on_order``: the intent is committed (``pending``, after the risk check of
   ``_authorised``); a redelivered order finds its row.
2. ``_drive``: one step under the order's advisory lock (``_step``): never sent → the
   submit is counted (durable) and sent; sent before → looked up at the venue, and sent
   again with the same id only when the venue has no trace of it.
3. ``_settle``: the outcome, the fill, the position and the ``order_result`` (outbox) in
   one transaction; published after the commit.

Prices feed the venue's stop watch (``_watch``: the paper venue closes positions at their
stop, MEXC executes the stop itself). The venue's positions are checked at start, before
any order is taken; housekeeping (its first round at start, beside the consumers) drives
unsettled orders again and reconciles the venue's positions with the book; a difference
it cannot explain stops new orders (fail closed) until the owner clears it
(``POST /positions/reconcile``).
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
from cdb.core.control import (
    AppliedControl,
    ask_control,
    load_control,
    read_control,
)
from cdb.core.db import DatabaseError
from cdb.core.events import Candle, Control, MarketData, Order, Stream
from cdb.core.http import APIRouter, Depends, admin_credential
from cdb.core.metrics import LATENCY_BUCKETS
from cdb.core.outbox import Outbox
from cdb.core.service import Service, public_config
from cdb.execution_service import store
from cdb.execution_service.book import Fill, OpenPosition, closed_result, order_result
from cdb.execution_service.live import MexcVenue
from cdb.execution_service.mexc_client import MexcPrivateClient
from cdb.execution_service.paper import FeeSchedule, PaperFillModel
from cdb.execution_service.paper_venue import PaperVenue
from cdb.execution_service.positions_guard import PositionGuard
from cdb.execution_service.settings import ExecutionSettings
from cdb.execution_service.venue import ExecutionVenue, PriceMove, VenueOutcome, VenueRefused

__all__ = ["ExecutionService", "venue_for"]

log = logging.getLogger("cdb.execution_service")

MAX_SUBMITS = 3  # sends of one order the venue cannot find, before it stays unknown


def venue_for(
    settings: ExecutionSettings, price_of: Callable[[str], float | None]
) -> ExecutionVenue:
    """The venue ``TRADING_MODE`` names (the settings checked live's three switches)."""
    if settings.trading_mode == "paper":
        fees = FeeSchedule(taker_rate=settings.taker_fee_rate, maker_rate=settings.maker_fee_rate)
        return PaperVenue(PaperFillModel(settings.paper_slippage_bps, fees), price_of)
    log.warning("LIVE trading: orders go to MEXC", extra={"url": settings.mexc_rest_url})
    client = MexcPrivateClient(
        settings.mexc_rest_url,
        settings.mexc_api_key,
        settings.mexc_api_secret,
        recv_window_s=settings.mexc_recv_window_s,
        timeout_s=settings.mexc_timeout_s,
    )
    return MexcVenue(client, leverage=settings.mexc_leverage)


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
        self.outbox = Outbox(self.name, kernel.database, kernel.bus)
        self.prices: dict[str, float] = {}  # the latest market price per symbol
        self.venue = venue_for(settings, self.prices.get)
        self.positions: dict[str, dict[str, OpenPosition]] = {}
        # held by a reload from its read to its swap, and by every open and close of a
        # position in memory: a snapshot read before a fill (or a stop) never undoes it
        self.positions_lock = asyncio.Lock()
        self.paused = False
        self.realized = 0.0
        self.guard = PositionGuard(
            self.venue,
            kernel.database,
            self.outbox,
            kernel.metrics.registry,
            close=self._close,
            source=self.name,
        )
        self._next_position_check = 0.0

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self.adopt(await load_control(self.kernel.database, self.name))
        await self._reload_positions()
        await self.outbox.flush()
        # The venue's positions before any order is taken: a mismatch halts first. Orders
        # a crash left unsettled are driven by housekeeping's first round, beside the
        # consumers: a locked or slow ``orders`` table must not keep them from starting
        # (a crash loop would then never re-read, and never count, the order it died on).
        await self._check_positions()

    async def close(self) -> None:
        await self.venue.close()

    def consumers(self) -> Sequence[Consumer[Any]]:
        return [
            # keyed in PostgreSQL by order_id: no Redis done key per order; the paper
            # venue's orders of one read in one transaction (a live order is a network
            # call of its own: one at a time)
            self.consumer(
                Stream.ORDERS,
                Order,
                self.on_order,
                done_keys=False,
                batch_handler=self.on_orders if self.venue.in_book else None,
            ),
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
        """Outbox retries, positions opened by replicas, reconciliation with the venue."""
        while not self.kernel.stop.is_set():
            try:
                await self.outbox.flush()
                await self._reload_positions()
                await self.reconcile()
            except Exception as error:  # retried on the next round
                log.warning("housekeeping failed", extra={"error": str(error)[:300]})
            await sleep_unless(self.kernel.stop, self.settings.live_poll_interval_s)

    # -- one order, top to bottom --------------------------------------------------
    async def on_order(self, order: Order) -> None:
        if self.venue.in_book:
            (status,) = await self._execute_in_book([order])
        else:
            db = self.kernel.database
            # pipelined: the order's status and its decision in one statement (the
            # decision read even when the order is known: a redelivery, the rare case)
            async with db.connection() as conn, conn.pipeline(), conn.transaction():
                state = await store.read_order_state(await store.ask_order_state(conn, order))
                status = state.status
                if status is None:
                    self._authorised(order, state.approved)
                    await store.insert_order(conn, order, "pending", self.venue.mode)  # intent
                    status = "pending"
        if status in ("pending", "unknown"):
            await self._drive(order)
        await self.outbox.flush_added()

    async def on_orders(self, orders: Sequence[Order]) -> None:
        """The orders of one read (paper venue): all of them in one transaction
        (:meth:`_execute_in_book`), or none. An order it must refuse makes the batch raise
        before anything is written: the kernel then hands the orders to :meth:`on_order`
        one at a time, which refuses (dead-letters) that one and executes the others."""
        statuses = await self._execute_in_book(orders)
        for order, status in zip(orders, statuses, strict=True):
            if status in ("pending", "unknown"):
                await self._drive(order)
        await self.outbox.flush_added()

    async def _execute_in_book(self, orders: Sequence[Order]) -> list[str | None]:
        """The paper venue's road: the check, the send (a computation), the fill, the
        position and the ``order_result`` of every order in one transaction of two round
        trips, under the orders' locks (taken in ``order_id`` order; a replica or
        housekeeping on one of them finishes first). A crash before the commit leaves
        nothing (the redelivery does it all again), after it the orders are known.
        Returns, per order, the status a redelivery found (None: executed now); a copy of
        an order earlier in ``orders`` finds it executed, as one read after the other."""
        db = self.kernel.database
        first_of: dict[str, Order] = {}
        for order in orders:
            first_of.setdefault(order.order_id, order)
        unique = list(first_of.values())
        done: list[tuple[Order, Literal["filled", "rejected"], VenueOutcome, float | None]] = []
        async with db.connection() as conn, conn.pipeline(), self.outbox.transaction(conn):
            for order_id in sorted(order.order_id for order in unique):
                await store.ask_xact_lock_order(conn, order_id)
            asked = [await store.ask_order_state(conn, order) for order in unique]  # after locks
            control = await ask_control(conn, self.name)
            states = {
                order.order_id: await store.read_order_state(cursor)
                for order, cursor in zip(unique, asked, strict=True)
            }
            self.adopt(await read_control(control))
            for order in unique:
                state = states[order.order_id]
                if state.status is None:
                    self._authorised(order, state.approved, alone=len(orders) == 1)
            for order in unique:
                state = states[order.order_id]
                if state.status is not None:
                    continue
                outcome = await self._send_in_book(order)
                kind: Literal["filled", "rejected"] = (
                    "rejected" if outcome.fill is None else "filled"
                )
                await store.insert_order(
                    conn, order, kind, self.venue.mode, outcome.reason,
                    submit_attempts=0 if outcome.fill is None else 1,
                )  # fmt: skip
                opened_at = None
                if outcome.fill is not None:
                    await store.write_opening(conn, order, outcome.fill)
                    opened_at = state.clock
                result = order_result(
                    order, kind, outcome.fill, outcome.reason, self.venue.mode, time.time()
                )
                await self.outbox.add(conn, result, Stream.ORDER_RESULTS)
                done.append((order, kind, outcome, opened_at))
        for order, kind, outcome, opened_at in done:
            if kind == "rejected":
                log.error(
                    "order refused", extra={"order_id": order.order_id, "reason": outcome.reason}
                )
            await self._count(order, kind, outcome.fill, opened_at)
        status_of = {order_id: state.status for order_id, state in states.items()}
        statuses: list[str | None] = []
        for order in orders:
            statuses.append(status_of[order.order_id])
            status_of[order.order_id] = status_of[order.order_id] or "executed"  # a copy
        return statuses

    async def _send_in_book(self, order: Order) -> VenueOutcome:
        """``filled`` with its fill, or ``rejected`` with the reason (held back, refused)."""
        held_back = self._held_back()
        if held_back:
            return VenueOutcome("rejected", reason=held_back)
        submission = await self.venue.prepare(order)
        if isinstance(submission, VenueOutcome):
            return VenueOutcome("rejected", reason=submission.reason)
        try:
            outcome = await self.venue.submit(submission)
        except VenueRefused as error:
            return VenueOutcome("rejected", reason=str(error))
        if outcome.kind != "filled" or outcome.fill is None:
            reason = outcome.reason or f"the venue answered {outcome.kind} without a fill"
            return VenueOutcome("rejected", reason=reason)
        return outcome

    def _authorised(self, order: Order, approved: Order | None, *, alone: bool = True) -> None:
        """Only what risk_manager approved is executed: the order must equal, field for
        field (its event id aside), ``approved``, the order of the approved decision row
        of its signal. Anything else (forged, altered, never decided) is refused and
        dead-lettered with the reason. Not ``alone`` (in a batch): only raised, so the
        kernel hands the orders over one at a time and the refusal is counted once."""
        if approved is None:
            reason = "no approved risk decision for this order's signal"
        elif approved.model_dump(exclude={"event_id"}) != order.model_dump(exclude={"event_id"}):
            reason = "the order differs from the one risk_manager approved"
        else:
            return
        if not alone:
            raise Refused(f"order {order.order_id} of the batch: {reason}")
        self.metrics.orders.labels("refused").inc()
        log.error(
            "order refused: not authorised by risk_manager",
            extra={"order_id": order.order_id, "signal_id": order.signal_id, "reason": reason},
        )
        raise Refused(f"{reason} (order {order.order_id}, signal {order.signal_id})")

    async def _drive(self, order: Order) -> None:
        """One step towards a known outcome under the order's advisory lock, so replicas,
        redeliveries and housekeeping never send or settle one order at the same time.
        Busy elsewhere: left to that worker (housekeeping looks again if it dies). The lock's
        connection runs in autocommit, so each store call below is durable when it returns
        (a submit is counted before it is sent)."""
        async with self.kernel.database.connection() as conn:
            await conn.set_autocommit(True)
            try:
                # pipelined: the try-lock, then (after it, on the server) the order's state
                # and the live config, in one round trip
                async with conn.pipeline():
                    locking = await store.ask_lock_order(conn, order.order_id)
                    reading = await store.ask_live_state(conn, order.order_id)
                    control = await ask_control(conn, self.name)
                    locked = await store.read_lock(locking)
                    state = await store.read_live_state(reading)
                    applied = await read_control(control)
                if not locked:
                    return
                try:
                    self.adopt(applied)
                    outcome = await self._step(conn, order, state)
                    if outcome is not None:
                        await self._settle(order, outcome)
                finally:
                    await store.unlock_order(conn, order.order_id)
            finally:
                with contextlib.suppress(DatabaseError):  # a broken connection is discarded
                    await conn.set_autocommit(False)

    async def _step(
        self, conn: store.Conn, order: Order, state: store.LiveState | None
    ) -> VenueOutcome | None:
        """Never submitted: send it (held back: reject it). Submitted before, or unknown:
        look it up; only when the venue does not know it, send it again with the same id,
        at most ``MAX_SUBMITS`` times in all. ``None``: nothing to settle now. ``state``
        was read under the order's lock."""
        if state is None or state.status not in ("pending", "unknown"):
            return None
        held_back = self._held_back()
        if state.submit_attempts == 0:
            if held_back:
                return VenueOutcome("rejected", reason=held_back)
            # the venue has never seen this id: whatever stops the send is a rejection
            return await self._submit(conn, order, refused="rejected")
        try:
            found = await self.venue.lookup(order)
        except VenueRefused as error:  # e.g. a revoked key: say so, keep the order as it is
            log.error(
                f"cannot reconcile {self.venue.mode} order",
                extra={"order_id": order.order_id, "error": str(error)},
            )
            return None
        if found.kind != "unknown" or state.submit_attempts >= MAX_SUBMITS or held_back:
            return found  # unknown stays unknown until proven; looked up every round
        # sent before, and the venue cannot find it: the earlier submit may still surface
        return await self._submit(conn, order, refused="unknown")

    async def _submit(
        self, conn: store.Conn, order: Order, refused: Literal["rejected", "unknown"]
    ) -> VenueOutcome:
        """Count the submit, then send; what stops the send becomes a ``refused`` outcome."""
        context = "" if refused == "rejected" else "sent before, not found at the venue; resend: "
        submission = await self.venue.prepare(order)
        if isinstance(submission, VenueOutcome):
            return VenueOutcome(refused, reason=context + submission.reason)
        await store.count_submit(conn, order.order_id)
        try:
            return await self.venue.submit(submission)
        except VenueRefused as error:
            return VenueOutcome(refused, reason=f"{context}{error}")

    async def _settle(self, order: Order, outcome: VenueOutcome) -> None:
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
                if outcome.fill is None:
                    raise ValueError(f"order {order.order_id} settled filled without a fill")
                opened_at = await store.open_position(conn, order, outcome.fill)
            result = order_result(
                order, kind, outcome.fill, outcome.reason, self.venue.mode, time.time()
            )
            await self.outbox.add(conn, result, Stream.ORDER_RESULTS)
        if kind == "unknown":
            log.error(
                "order unknown to the venue; kept as unknown until proven",
                extra={"order_id": order.order_id, "mode": self.venue.mode},
            )
        elif kind == "rejected":
            log.error("order refused", extra={"order_id": order.order_id, "reason": outcome.reason})
        await self._count(order, kind, outcome.fill, opened_at)

    def _held_back(self) -> str:
        """Why no new order may be sent now ("": it may)."""
        if self.paused:
            return "trading is paused"
        if self.guard.halted:
            return f"trading halted: {self.guard.halted}"
        return ""

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

    # -- reconciliation with the venue ---------------------------------------------
    async def reconcile(self) -> None:
        """Unsettled orders first (their fills explain positions), then the venue's
        positions when their interval is due (:mod:`.positions_guard`)."""
        await self.reconcile_orders()
        if time.monotonic() >= self._next_position_check:
            await self._check_positions()

    async def _check_positions(self) -> None:
        self._next_position_check = time.monotonic() + self.settings.position_check_interval_s
        await self.guard.check()

    async def reconcile_orders(self) -> None:
        """Every pending or unknown order of this venue is driven one step (``_step``)."""
        async with self.kernel.database.connection() as conn:
            orders = await store.orders_to_reconcile(conn, self.venue.mode)
        for order in orders:
            try:
                await self._drive(order)
            except TRANSIENT_ERRORS as error:  # the venue or a store unreachable: next round
                log.warning(
                    "order not reconciled now",
                    extra={"order_id": order.order_id, "error": str(error)[:300]},
                )
        await self.outbox.flush()

    # -- prices and stops ----------------------------------------------------------
    async def on_candle(self, candle: Candle) -> None:
        self.prices[candle.symbol] = candle.close
        await self._watch(
            PriceMove(
                candle.symbol,
                low=candle.low,
                high=candle.high,
                open_=candle.open,
                last=candle.close,
                start=float(candle.open_time),
                end=candle.open_time + 60.0,
            )
        )

    async def on_market_data(self, md: MarketData) -> None:
        self.prices[md.symbol] = md.price
        at = md.timestamp + 2.0  # whole seconds: a tick of the fill's second counts
        await self._watch(
            PriceMove(md.symbol, low=md.price, high=md.price, open_=None, last=md.price,
                      start=at, end=at)
        )  # fmt: skip

    async def _watch(self, move: PriceMove) -> None:
        """Close the positions this price takes through their stop, where the venue leaves
        that to cdb (paper; MEXC executes its stops itself)."""
        for position in list(self.positions.get(move.symbol, {}).values()):
            fill = self.venue.stop_exit(position, move)
            if fill is not None:
                await self._close(position, fill)

    async def _close(self, position: OpenPosition, fill: Fill, reason: str = "") -> None:
        """Close once (at its stop, unless ``reason`` says otherwise). Under the
        positions lock from before the transaction to the book in memory, so a reload
        reads the realised PnL either before this close or with it, never twice."""
        db = self.kernel.database
        async with self.positions_lock:
            async with db.connection() as conn, conn.pipeline(), self.outbox.transaction(conn):
                closed = await store.close_position(conn, position, fill)
                if closed:
                    result = closed_result(position, fill, time.time(), reason, self.venue.mode)
                    await self.outbox.add(conn, result, Stream.ORDER_RESULTS)
            self.positions.get(position.symbol, {}).pop(position.order_id, None)
            if closed:
                self.realized += fill.realized_pnl
        self._show_positions()
        if closed:
            self.metrics.fills.inc()
            self.metrics.fees.inc(fill.fee)
            self.metrics.stop_closes.inc()
            self.metrics.realized.set(self.realized)
            log.info(
                "position closed",
                extra={
                    "order_id": position.order_id,
                    "pnl": round(fill.realized_pnl, 6),
                    "reason": result.reason,
                },
            )
        await self.outbox.flush_added()

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
    def adopted(self, control: AppliedControl) -> None:
        """``paused`` from the live config."""
        self.paused = bool(control.settings.paused)

    def router(self) -> APIRouter:
        # lifting a halt lets orders reach the venue again: the admin credential only
        token = self.settings.admin_token.get_secret_value()
        router = APIRouter(dependencies=[Depends(admin_credential(token))])

        @router.post("/positions/reconcile")
        async def reconcile_now() -> dict[str, Any]:
            await self.reconcile_orders()
            await self.guard.check(clear=True)
            return self.guard.describe()

        return router

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
            "venue": {"mode": self.venue.mode, **self.guard.describe()},
        }
