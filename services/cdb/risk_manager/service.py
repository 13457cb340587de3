"""risk_manager: ``signals`` → ``orders``; ``order_results`` update the book; ML in shadow.

Per signal, in one transaction under the book lock: an existing decision is reused (a
redelivery republishes the same order), otherwise the rules decide on the book in memory
(``ledger.py``; reloaded from PostgreSQL only when another replica wrote it since, which
the lock's version row tells), and the decision, the reserved position or the rejection
are written; the book in memory takes the change in at the end of the transaction, while
the lock is held (a failed commit has it loaded again). The statements go
pipelined: the reads in one round trip, the writes with the commit in another. The
order (``event_id`` = ``order_id``, derived from ``signal_id``) is published after the
commit, then the signal acknowledged. Order results are applied once per
(order, status) through the ``equity`` ledger's unique key; a breaker trip writes a
``risk_events`` row and an ``alert`` through the outbox in the same transaction.

The signals (order results) of one read go through :meth:`RiskManager.on_signals`
(:meth:`RiskManager.on_order_results`) in one transaction: the lock once, each event
decided on the ledger the ones before it in the read left, one commit, the orders
published after it; a hold for approval or a breaker trip sends the read one event at a
time (docs/TRADING_PIPELINE.md, "Batches").

In manual approval mode an approved order is held instead of published: its
``approval_request`` goes out through the outbox with the decision, and the order only
after the owner's ``approval_decision`` (``approvals.py``; docs/TRADING_PIPELINE.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from typing import Any

from prometheus_client import Counter, Gauge

from cdb.core.bus import Consumer, sleep_unless
from cdb.core.control import (
    AppliedControl,
    ask_control,
    current_control,
    load_control,
    read_control,
)
from cdb.core.events import (
    Alert,
    ApprovalDecision,
    Control,
    MlSignal,
    Order,
    OrderResult,
    Signal,
    Stream,
)
from cdb.core.http import APIRouter, Depends, admin_credential
from cdb.core.outbox import Outbox
from cdb.core.service import Service, public_config
from cdb.risk_manager import approvals, store
from cdb.risk_manager.ledger import Ledger
from cdb.risk_manager.rules import DayState, Rejection, RiskBook, RiskLimits
from cdb.risk_manager.settings import RiskManagerSettings

__all__ = ["RiskManager"]

log = logging.getLogger("cdb.risk_manager")


def limits_from(settings: RiskManagerSettings) -> RiskLimits:
    return RiskLimits(
        max_position_pct=settings.max_position_pct,
        max_exposure_pct=settings.max_exposure_pct,
        stop_loss_pct=settings.stop_loss_pct,
        max_daily_loss_pct=settings.max_daily_loss_pct,
    )


class OneAtATime(Exception):
    """A signal of a batch needs the one-at-a-time road (a hold, a breaker trip)."""


class RiskMetrics:
    def __init__(self, registry: Any) -> None:
        r = registry
        self.approved = Counter("risk_orders_approved_total", "Orders approved", registry=r)
        self.rejected = Counter(
            "risk_signals_rejected_total", "Signals rejected", ["reason"], registry=r
        )
        self.equity = Gauge("risk_equity_usdt", "Equity (USDT)", registry=r)
        self.daily_pnl = Gauge("risk_daily_pnl_usdt", "PnL since the day opened", registry=r)
        self.exposure = Gauge("risk_exposure_usdt", "Reserved + open notional", registry=r)
        self.exposure_pct = Gauge("risk_exposure_pct", "Exposure in % of equity", registry=r)
        self.open_positions = Gauge("risk_open_positions", "Active positions", registry=r)
        self.breaker = Gauge("risk_circuit_breaker_active", "1 while tripped", registry=r)
        self.shadow = Counter(
            "risk_ml_shadow_signals_total", "ML signals logged in shadow mode", registry=r
        )
        self.approvals = Counter(
            "risk_approvals_total",
            "Orders held for the owner's approval and how they ended",
            ["outcome"],  # held, approved, vetoed, expired
            registry=r,
        )
        for outcome in ("held", "approved", "vetoed", "expired"):
            self.approvals.labels(outcome)
        self.pending = Gauge(
            "risk_approvals_pending", "Orders waiting for the owner's approval", registry=r
        )

    def show(self, book: RiskBook) -> None:
        self.equity.set(book.equity)
        self.daily_pnl.set(book.daily_pnl())
        self.exposure.set(book.exposure)
        self.exposure_pct.set(100.0 * book.exposure / book.equity if book.equity > 0 else 0.0)
        self.open_positions.set(book.open_positions)
        self.breaker.set(1.0 if book.today is not None and book.today.breaker_tripped else 0.0)


class RiskManager(Service[RiskManagerSettings]):
    name = "risk_manager"
    watches_input = False  # quiet signal streams are normal

    def __init__(self, settings: RiskManagerSettings, kernel: Any) -> None:
        super().__init__(settings, kernel)
        self.limits = limits_from(settings)
        self.metrics = RiskMetrics(kernel.metrics.registry)
        self.outbox = Outbox(self.name, kernel.database, kernel.bus)
        self.summary: dict[str, Any] = {}
        self.shown_version = -1  # the book version /status and the gauges show
        self.pending = 0
        # the book in memory and the book version it reflects (None: load it again)
        self.ledger: Ledger | None = None
        self.version: int | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self.adopt(await load_control(self.kernel.database, self.name))
        async with self._book_transaction() as conn:
            version = await store.lock_book(conn)
            ledger = await store.load_ledger(conn, self.settings.starting_equity, time.time())
            self.pending = await approvals.pending_count(conn)
            self.ledger, self.version = ledger, version
        self._show(ledger.view(self.limits), version)
        await self.outbox.flush()

    def consumers(self) -> Sequence[Consumer[Any]]:
        return [
            # both keyed in PostgreSQL (the decision per signal, the result's key): no
            # Redis done key per event
            self.consumer(
                Stream.SIGNALS,
                Signal,
                self.on_signal,
                done_keys=False,
                batch_handler=self.on_signals,
            ),
            self.consumer(
                Stream.ORDER_RESULTS,
                OrderResult,
                self.on_order_result,
                done_keys=False,
                batch_handler=self.on_order_results,
            ),
            self.consumer(Stream.ML_SIGNALS, MlSignal, self.on_ml_signal),
            self.consumer(Stream.CONTROL, Control, self.on_control, touches_health=False),
            self.consumer(
                Stream.APPROVAL_DECISIONS,
                ApprovalDecision,
                self.on_approval_decision,
                touches_health=False,
            ),
        ]

    def tasks(self) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        return [self._flush_outbox_periodically, self._expire_periodically]

    async def _expire_periodically(self) -> None:
        while not self.kernel.stop.is_set():
            await sleep_unless(self.kernel.stop, self.settings.risk_approval_check_s)
            try:
                await self.expire_due()
            except Exception as error:  # retried on the next round
                log.warning("approval expiry failed", extra={"error": str(error)[:300]})

    async def _flush_outbox_periodically(self) -> None:
        while not self.kernel.stop.is_set():
            await sleep_unless(self.kernel.stop, 2.0)
            try:
                await self.outbox.flush()
            except Exception as error:  # retried on the next round
                log.warning("outbox flush failed", extra={"error": str(error)[:300]})

    # -- handlers ------------------------------------------------------------------
    async def on_signal(self, signal: Signal) -> None:
        now = time.time()
        order: Order | None
        held = False
        async with self._book_transaction(pipeline=True) as conn:
            asked = await store.ask_lock_and_decisions(conn, [signal.signal_id])
            control = await ask_control(conn, self.name)  # a peer may have applied one
            version, known = await store.read_version_and_decisions(asked)
            existing = known.get(signal.signal_id)
            self.adopt(await read_control(control))
            if existing is not None:
                # only an approved decision's order goes out again (held: the owner's)
                order = existing[1] if existing[0] == "approved" else None
                fresh = False
            else:
                fresh = True
                ledger = await self._ledger(conn, version, now)
                book = ledger.view(self.limits, symbol=signal.symbol)
                loaded_day = replace(book.today) if book.today is not None else None
                decision = book.decide(signal, now)
                if book.today is not None:
                    await self._save_day(conn, book, book.today, loaded_day)
                if isinstance(decision, Rejection):
                    order = None
                    await self._record_rejection(conn, signal, decision)
                else:
                    order = decision
                    rule = self._policy()
                    held = rule.mode == "manual"
                    await store.insert_decision(
                        conn,
                        signal.signal_id,
                        order,
                        held=held,
                        position=book.positions[order.order_id],
                    )
                    if held:
                        await self._hold(conn, book, signal, order, now, rule.timeout_s)
            if fresh:
                self._committed(ledger, book, version)
            else:
                self._unchanged(version)
        if fresh:
            self._show(book, version)
            if isinstance(decision, Rejection):
                self.metrics.rejected.labels(decision.reason).inc()
                log.info(
                    "signal rejected",
                    extra={"signal_id": signal.signal_id, "reason": decision.reason},
                )
            elif order is not None and held:
                self.metrics.approvals.labels("held").inc()
                log.info(
                    "order held for approval",
                    extra={"order_id": order.order_id, "notional": round(order.notional, 2)},
                )
            elif order is not None:
                self.metrics.approved.inc()
                log.info(
                    "order approved",
                    extra={"order_id": order.order_id, "notional": round(order.notional, 2)},
                )
        if order is not None and not held:
            await self.kernel.bus.publish(order, Stream.ORDERS)
        await self.outbox.flush_added()

    async def on_signals(self, signals: Sequence[Signal]) -> None:
        """The signals of one read (the consumer's ``batch_handler``) in one transaction:
        the book lock and version bump once, the batch's decisions read in the same
        statement, then each signal decided on the book as the ones before it in the batch
        left it (each view folded into the ledger before the next: what one signal reserves
        counts for the next, exactly as one at a time), its decision and reserved position
        written; one commit, then the approved orders published in order in one round trip.
        A hold for the owner's approval or a breaker trip raises :class:`OneAtATime` before
        the commit: the kernel then hands the same signals to :meth:`on_signal` one by one
        (the ledger, folded ahead, is loaded again: the failed transaction left no version)."""
        now = time.time()
        outcomes: list[tuple[Signal, Order | Rejection]] = []
        orders: list[Order] = []
        book: RiskBook | None = None
        async with self._book_transaction(pipeline=True) as conn:
            asked = await store.ask_lock_and_decisions(conn, [s.signal_id for s in signals])
            control = await ask_control(conn, self.name)
            version, known = await store.read_version_and_decisions(asked)
            self.adopt(await read_control(control))
            if self._policy().mode == "manual" and any(s.signal_id not in known for s in signals):
                raise OneAtATime("orders are held for the owner's approval")
            ledger = await self._ledger(conn, version, now)
            for signal in signals:
                existing = known.get(signal.signal_id)
                if existing is not None:  # decided before (a redelivery): as on_signal
                    if existing[0] == "approved" and existing[1] is not None:
                        orders.append(existing[1])
                    continue
                book = ledger.view(self.limits, symbol=signal.symbol)
                loaded_day = replace(book.today) if book.today is not None else None
                decision = book.decide(signal, now)
                if book.today is not None and book.today != loaded_day:
                    if book.today.breaker_tripped and not (
                        loaded_day is not None
                        and loaded_day.day == book.today.day
                        and loaded_day.breaker_tripped
                    ):
                        raise OneAtATime("the breaker trips")
                    await self._save_day(conn, book, book.today, loaded_day)  # a new day
                if isinstance(decision, Rejection):
                    await self._record_rejection(conn, signal, decision)
                    known[signal.signal_id] = ("rejected", None)
                else:
                    await store.insert_decision(
                        conn,
                        signal.signal_id,
                        decision,
                        position=book.positions[decision.order_id],
                    )
                    known[signal.signal_id] = ("approved", decision)
                    orders.append(decision)
                ledger.fold(book)  # the next signal of the batch decides on this one's book
                outcomes.append((signal, decision))
            if self.ledger is ledger and self.version == version - 1:
                self.version = version
            else:  # another transaction of this process failed meanwhile: load it again
                self.version = None
        if book is not None:
            self._show(book, version)
        for signal, decision in outcomes:
            if isinstance(decision, Rejection):
                self.metrics.rejected.labels(decision.reason).inc()
                log.info(
                    "signal rejected",
                    extra={"signal_id": signal.signal_id, "reason": decision.reason},
                )
            else:
                self.metrics.approved.inc()
                log.info(
                    "order approved",
                    extra={
                        "order_id": decision.order_id,
                        "notional": round(decision.notional, 2),
                    },
                )
        await self.kernel.bus.publish_payloads(
            [(Stream.ORDERS, order.model_dump_json().encode()) for order in orders]
        )
        await self.outbox.flush_added()

    @staticmethod
    async def _record_rejection(conn: Any, signal: Signal, rejection: Rejection) -> None:
        """A rejected signal's decision row and its ``rejection`` risk event."""
        await store.insert_decision(conn, signal.signal_id, None, rejection.reason)
        await store.insert_risk_event(
            conn,
            f"reject:{signal.signal_id}",
            "rejection",
            f"{rejection.reason}: {rejection.detail}",
            signal_id=signal.signal_id,
            details={"symbol": signal.symbol, "side": signal.side},
        )

    async def _hold(
        self, conn: Any, book: RiskBook, signal: Signal, order: Order, now: float, timeout: int
    ) -> None:
        """Keep ``order`` for the owner: the row, and its request through the outbox."""
        limits = self.limits
        equity = book.equity
        reasons = [
            signal.reason,
            f"{signal.side} {order.quantity:.6g} {order.symbol} at {order.price:.6g}: "
            f"{order.notional:.2f} USDT = {limits.max_position_pct:g}% of equity "
            f"{equity:.2f} USDT",
            f"stop loss {order.stop_loss:.6g} ({limits.stop_loss_pct:g}%)",
            f"exposure after fill {book.exposure:.2f} USDT "
            f"(limit {limits.max_exposure_pct:g}% of equity)",
        ]
        request = approvals.request_for(
            order,
            equity=equity,
            exposure_after=book.exposure,
            reasons=[r for r in reasons if r],
            now=now,
            expires_at=now + timeout,
        )
        await approvals.hold(conn, request)
        await self.outbox.add(conn, request, Stream.APPROVALS)
        self.pending = await approvals.pending_count(conn)

    def _policy(self) -> approvals.ApprovalPolicy:
        return approvals.policy(
            self.settings.risk_approval, self.settings.risk_approval_timeout_s, self.control
        )

    async def on_approval_decision(self, decision: ApprovalDecision) -> None:
        """The owner's answer. The first decision of a pending order takes effect (the
        approved order goes out through the outbox with it); the winning decision delivered
        again (a crash before its acknowledgement) publishes the same order again, which
        execution_service executes once; anything else (a second device, a double tap, a
        veto after an approve) is refused and logged. An approve after the window closed
        expires the order instead."""
        now = time.time()
        outcome = "refused"
        republish: Order | None = None
        async with self._book_transaction() as conn:
            version = await store.lock_book(conn)
            self.adopt(await current_control(conn, self.name))
            held = await approvals.find(conn, decision.order_id)
            if held is None:
                outcome = "unknown"
            elif held.state == "pending" and held.expires_at <= now:
                if await self._settle(conn, held.order, "expired", None):
                    outcome = "expired"
            elif held.state == "pending":
                state: approvals.State = "approved" if decision.decision == "approve" else "vetoed"
                if await self._settle(conn, held.order, state, decision):
                    outcome = state
                    if state == "approved":
                        await self.outbox.add(conn, held.order, Stream.ORDERS)
            elif held.state == "approved" and held.decision_event_id == decision.event_id:
                outcome = "republished"  # the winning decision again: a redelivery
                republish = held.order
            ledger = await store.load_ledger(conn, self.settings.starting_equity, now)
            self.pending = await approvals.pending_count(conn)
            self.ledger, self.version = ledger, version
        self._show(ledger.view(self.limits), version)
        if outcome in ("approved", "vetoed", "expired"):
            self.metrics.approvals.labels(outcome).inc()
        extra = {
            "order_id": decision.order_id,
            "decision": decision.decision,
            "actor": decision.actor,
            "event_id": decision.event_id,
            "outcome": outcome,
        }
        if outcome in ("approved", "vetoed", "republished"):
            log.info("approval decision applied", extra=extra)
        else:
            state_now = held.state if held is not None else "none"
            log.warning("approval decision refused", extra=extra | {"state": state_now})
        if republish is not None:
            await self.kernel.bus.publish(republish, Stream.ORDERS)
        await self.outbox.flush()

    async def expire_due(self) -> int:
        """Expire every pending order whose window closed; returns how many."""
        now = time.time()
        expired = 0
        async with self._book_transaction() as conn:
            version = await store.lock_book(conn)
            due = await approvals.due(conn, now)
            if due:
                self.adopt(await current_control(conn, self.name))
            for order_id in due:
                held = await approvals.find(conn, order_id)
                if held is not None and await self._settle(conn, held.order, "expired", None):
                    expired += 1
            if due:
                ledger = await store.load_ledger(conn, self.settings.starting_equity, now)
                self.pending = await approvals.pending_count(conn)
                self.ledger, self.version = ledger, version
            else:
                self._unchanged(version)
        if not due:
            return 0
        self._show(ledger.view(self.limits), version)
        self.metrics.approvals.labels("expired").inc(expired)
        if expired:
            log.info("held orders expired", extra={"count": expired})
        return expired

    async def _settle(
        self,
        conn: Any,
        order: Order,
        state: approvals.State,
        decision: ApprovalDecision | None,
    ) -> bool:
        if state == "pending":
            raise ValueError(f"order {order.order_id} cannot settle while its approval is pending")
        return await approvals.settle(
            conn,
            order,
            state,
            actor=decision.actor if decision else approvals.EXPIRY_ACTOR,
            reason=(decision.reason if decision else "")
            or ("expired" if state == "expired" else ""),
            event_id=decision.event_id if decision else None,
            control=self.control,
        )

    async def on_order_result(self, result: OrderResult) -> None:
        now = time.time()
        key = f"result:{result.order_id}:{result.status}"
        book: RiskBook | None = None
        async with self._book_transaction(pipeline=True) as conn:
            version, seen = await store.read_version_and_seen_keys(
                await store.ask_lock_and_seen_keys(conn, [key])
            )
            if key not in seen:
                ledger = await self._ledger(conn, version, now)
                row = ledger.positions.get(result.order_id) or await store.load_position(
                    conn, result.order_id
                )
                book = ledger.view(self.limits, row=row)
                loaded_day = replace(book.today) if book.today is not None else None
                effect = book.apply_result(result, now)
                if effect.applied and effect.position is not None:
                    await store.record_result(
                        conn,
                        key,
                        book,
                        effect.equity_delta,
                        result.status,
                        position=effect.position,
                    )
                    if book.today is not None:
                        await self._save_day(conn, book, book.today, loaded_day)
                else:
                    book = None
                    log.warning(
                        "order result for an order this book does not know",
                        extra={"order_id": result.order_id, "status": result.status},
                    )
            if book is None:
                self._unchanged(version)
            else:
                self._committed(ledger, book, version)
        if book is None:
            return
        self._show(book, version)
        await self.outbox.flush_added()

    async def on_order_results(self, results: Sequence[OrderResult]) -> None:
        """The order results of one read (the consumer's ``batch_handler``) in one
        transaction: the lock and bump once with the batch's applied keys, the positions
        the ledger does not hold (closed, released) in one more read, then each result
        applied on the book as the ones before it in the batch left it (folded before the
        next; a position a result of the batch made inactive is kept for the next result
        of the same order), its ``equity`` row and position written. A breaker trip raises
        :class:`OneAtATime` before the commit (its risk event, alert and log are
        :meth:`on_order_result`'s)."""
        now = time.time()
        keys = [f"result:{r.order_id}:{r.status}" for r in results]
        book: RiskBook | None = None
        unknown: list[OrderResult] = []
        async with self._book_transaction(pipeline=True) as conn:
            version, seen = await store.read_version_and_seen_keys(
                await store.ask_lock_and_seen_keys(conn, keys)
            )
            ledger = await self._ledger(conn, version, now)
            missing = [
                r.order_id
                for r, key in zip(results, keys, strict=True)
                if key not in seen and r.order_id not in ledger.positions
            ]
            inactive = await store.load_positions(conn, missing) if missing else {}
            for result, key in zip(results, keys, strict=True):
                if key in seen:
                    continue
                row = ledger.positions.get(result.order_id) or inactive.get(result.order_id)
                view = ledger.view(self.limits, row=row)
                loaded_day = replace(view.today) if view.today is not None else None
                effect = view.apply_result(result, now)
                if not effect.applied or effect.position is None:
                    unknown.append(result)
                    continue
                if effect.breaker_tripped:
                    raise OneAtATime("the breaker trips")
                await store.record_result(
                    conn, key, view, effect.equity_delta, result.status, position=effect.position
                )
                if view.today is not None:
                    await self._save_day(conn, view, view.today, loaded_day)  # a new day
                seen.add(key)
                ledger.fold(view)  # the next result of the batch applies on this book
                if not effect.position.active:
                    inactive[result.order_id] = replace(effect.position)
                book = view
            if self.ledger is ledger and self.version == version - 1:
                self.version = version
            else:  # another transaction of this process failed meanwhile: load it again
                self.version = None
        for result in unknown:
            log.warning(
                "order result for an order this book does not know",
                extra={"order_id": result.order_id, "status": result.status},
            )
        if book is not None:
            self._show(book, version)
        await self.outbox.flush_added()

    async def on_ml_signal(self, ml: MlSignal) -> None:
        async with self.kernel.database.connection() as conn, conn.transaction():
            created = await store.insert_ml_signal(conn, ml)
        if created:
            self.metrics.shadow.inc()
            log.info(
                "ml signal logged in shadow mode (never traded)",
                extra={
                    "signal_id": ml.signal_id,
                    "symbol": ml.symbol,
                    "confidence": ml.confidence,
                    "above_threshold": ml.confidence > self.settings.shadow_confidence_threshold,
                },
            )

    def adopted(self, control: AppliedControl) -> None:
        """Limits from the live config."""
        self.limits = limits_from(self.settings).with_control(control.settings)

    async def reset_breaker(self) -> dict[str, Any]:
        now = time.time()
        async with self._book_transaction() as conn:
            version = await store.lock_book(conn)
            ledger = await self._ledger(conn, version, now)
            book = ledger.view(self.limits)
            today = book.reset_breaker(now)
            await store.save_day(conn, today, reset=True)
            key = f"breaker_reset:{today.day.isoformat()}:{now}"
            message = f"circuit breaker reset; day re-based at {today.opening_equity:.2f} USDT"
            await store.insert_risk_event(conn, key, "breaker_reset", message)
            alert = Alert(
                event_id=f"alert-{key}",
                kind="breaker_reset",
                severity="info",
                message=message,
                source=self.name,
                details={"day": today.day.isoformat(), "opening_equity": today.opening_equity},
                timestamp=now,
            )
            await self.outbox.add(conn, alert, Stream.ALERTS)
            self._committed(ledger, book, version)
        await self.outbox.flush()
        self._show(book, version)
        log.warning("circuit breaker reset by request")
        return self.summary

    # -- helpers -------------------------------------------------------------------
    async def _ledger(self, conn: Any, version: int, now: float) -> Ledger:
        """The book in memory, loaded again (inside the caller's transaction, under the
        lock) when some other transaction wrote the book since this one last saw it: our
        own bump made ``version``, so the one before it must be the one we know."""
        if self.ledger is None or self.version != version - 1:
            self.ledger = await store.load_ledger(conn, self.settings.starting_equity, now)
            self.version = version - 1
        return self.ledger

    @asynccontextmanager
    async def _book_transaction(self, *, pipeline: bool = False) -> AsyncIterator[Any]:
        """A transaction that takes the book lock (``store.lock_book``/``ask_lock``).

        The block ends by moving the book in memory to what it wrote (``_committed``,
        ``_unchanged``) while the lock is still held, so no other transaction, of this
        process's other consumers or of another replica, can start between the commit
        and that move. If the block or its commit fails, the book in memory is loaded
        again by the next transaction."""
        try:
            async with self.kernel.database.connection() as conn:
                if pipeline:
                    async with conn.pipeline(), conn.transaction():
                        yield conn
                else:
                    async with conn.transaction():
                        yield conn
        except BaseException:
            self.version = None
            raise

    def _committed(self, ledger: Ledger, book: RiskBook, version: int) -> None:
        """At the end of the transaction of ``version``: the book in memory takes in what
        ``book`` (a view of ``ledger``) changed."""
        if self.ledger is ledger and self.version == version - 1:
            ledger.fold(book)
            self.version = version
        else:
            self.version = None

    def _unchanged(self, version: int) -> None:
        """A committed book transaction that changed nothing but the version."""
        if self.version == version - 1:
            self.version = version

    async def _save_day(
        self, conn: Any, book: RiskBook, today: DayState, stored: DayState | None
    ) -> None:
        """Write the day if it changed; a fresh trip also writes its risk event and alert."""
        if stored == today:
            return
        was_tripped = stored is not None and stored.day == today.day and stored.breaker_tripped
        await store.save_day(conn, today)
        if today.breaker_tripped and not was_tripped:
            key = f"breaker:{today.day.isoformat()}:{today.opening_equity:.6f}"
            details: dict[str, float | str | bool] = {
                "day": today.day.isoformat(),
                "opening_equity": round(today.opening_equity, 6),
                "equity": round(book.equity, 6),
                "daily_pnl": round(book.daily_pnl(), 6),
                "max_daily_loss_pct": self.limits.max_daily_loss_pct,
            }
            await store.insert_risk_event(
                conn, key, "circuit_breaker", today.breaker_reason, details=details
            )
            alert = Alert(
                event_id=f"alert-{key}",
                kind="circuit_breaker",
                severity="critical",
                message=f"circuit breaker tripped: {today.breaker_reason}",
                source=self.name,
                details=details,
                timestamp=time.time(),
            )
            await self.outbox.add(conn, alert, Stream.ALERTS)
            self.metrics.breaker.set(1.0)
            log.error("circuit breaker tripped", extra={"reason": today.breaker_reason})

    def _show(self, book: RiskBook, version: int) -> None:
        """The book of the transaction that committed ``version`` on /status and in the
        gauges, unless a newer one is already shown: the consumers' transactions commit in
        version order (the book lock) but reach this line, after the commit, in any order."""
        if version < self.shown_version:
            return
        self.shown_version = version
        self.metrics.show(book)
        self.summary = {
            "equity_usdt": round(book.equity, 6),
            "daily_pnl_usdt": round(book.daily_pnl(), 6),
            "exposure_usdt": round(book.exposure, 6),
            "open_positions": book.open_positions,
            "breaker_active": bool(book.today and book.today.breaker_tripped),
            "breaker_reason": book.today.breaker_reason if book.today else "",
            "day": book.today.day.isoformat() if book.today else None,
            "opening_equity_usdt": book.today.opening_equity if book.today else None,
            "approvals_pending": self.pending,
        }
        self.metrics.pending.set(self.pending)

    def router(self) -> APIRouter:
        # lifting a tripped breaker changes the book: the admin credential only
        token = self.settings.admin_token.get_secret_value()
        router = APIRouter(dependencies=[Depends(admin_credential(token))])

        @router.post("/breaker/reset")
        async def reset() -> dict[str, Any]:
            return {"reset": True, "book": await self.reset_breaker()}

        return router

    def status(self) -> dict[str, Any]:
        return {
            "config": public_config(self.settings),
            "in_force": asdict(self.limits),
            "approval": asdict(self._policy()) | {"pending": self.pending},
            "control": self.control.describe() if self.control else None,
            "book": self.summary,
        }
