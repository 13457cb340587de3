"""The position guard: live position reconciliation with the venue, and the halt it
raises when the book no longer says what the venue holds (fail closed).

``check()`` runs at start and every ``POSITION_CHECK_INTERVAL_S`` (the service calls it):
the venue's open positions against the book (:mod:`cdb.execution_service.reconcile`);
a whole close the venue made on its own is booked through the service's ``close``; an
unexplained difference sets ``halted`` (the service then sends no new order), the
``execution_venue_halted`` gauge, and one critical ``alert`` through the outbox. Only
``check(clear=True)`` (the owner's ``POST /positions/reconcile``) or a restart lifts it,
and only when the venue and the book agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from cdb.core.bus import TRANSIENT_ERRORS
from cdb.core.db import Database
from cdb.core.events import Alert, Stream
from cdb.core.outbox import Outbox
from cdb.execution_service import store
from cdb.execution_service.book import Fill, OpenPosition
from cdb.execution_service.reconcile import (
    CLOSE_SLACK_S,
    PositionCheck,
    compare_positions,
    venue_close_fills,
)
from cdb.execution_service.venue import ExecutionVenue, VenueRefused

__all__ = ["PositionGuard"]

log = logging.getLogger("cdb.execution_service")

CHECK_ERRORS: tuple[type[BaseException], ...] = (VenueRefused, *TRANSIENT_ERRORS)
Close = Callable[[OpenPosition, Fill, str], Awaitable[None]]


class PositionGuard:
    def __init__(
        self,
        venue: ExecutionVenue,
        database: Database,
        outbox: Outbox,
        registry: Any,
        *,
        close: Close,
        source: str,
    ) -> None:
        self.venue = venue
        self.database = database
        self.outbox = outbox
        self.close = close  # books a close: one transaction with its ``closed`` result
        self.source = source
        self.halted = ""  # why new orders are held back ("": they are not)
        self.last: dict[str, Any] | None = None  # the last check, for /status
        self.halted_gauge = Gauge(
            "execution_venue_halted",
            "1 while new orders are held back by a position mismatch with the venue",
            registry=registry,
        )
        self.checks = Counter(
            "execution_position_checks_total",
            "Position reconciliations by result (matched, explained, mismatch, failed)",
            ["result"],
            registry=registry,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "halted": bool(self.halted),
            "halt_reason": self.halted,
            "position_check": self.last,
        }

    async def check(self, *, clear: bool = False) -> PositionCheck | None:
        """The venue's positions against the book. None: nothing to compare (a venue
        without positions of its own), or the venue could not be asked (logged, counted
        as ``failed``; a halt stays as it was)."""
        async with self.database.connection() as conn:
            snapshot_at = await store.database_now(conn)
        try:
            held = await self.venue.open_positions()
            if held is None:
                return None
            async with self.database.connection() as conn:
                # in flight first: an order settled between the two reads is then in
                # both (harmless), never in neither (a false mismatch)
                in_flight = await store.orders_to_reconcile(conn, self.venue.mode)
                book = await store.open_positions_of_mode(conn, self.venue.mode)
            check = compare_positions(held, book, in_flight, snapshot_at)
            check = await self._book_venue_closes(check, book)
        except CHECK_ERRORS as error:
            self.checks.labels("failed").inc()
            self.last = {"result": "failed", "error": str(error)[:300], "at": snapshot_at}
            log.error("cannot check positions at the venue", extra={"error": str(error)[:300]})
            return None
        self.checks.labels(check.result).inc()
        self.last = {
            "result": check.result,
            "at": snapshot_at,
            "matched": check.matched,
            "explained": [d.describe() for d in check.explained],
            "unexplained": [d.describe() for d in check.unexplained],
        }
        if check.unexplained:
            await self._halt(check)
        elif clear and self.halted:
            log.warning("halt lifted: the venue and the book agree", extra={"was": self.halted})
            self.halted = ""
            self.halted_gauge.set(0)
        if check.explained:
            log.info("position differences explained", extra={"check": self.last})
        return check

    async def _book_venue_closes(
        self, check: PositionCheck, book: Sequence[OpenPosition]
    ) -> PositionCheck:
        """Where the venue holds nothing of what the book holds, the positions it closed on
        its own (the stop it executed) may add up to it: then they are booked as closes
        and the difference is explained (:func:`.reconcile.venue_close_fills`)."""
        explained, unexplained = list(check.explained), []
        for difference in check.unexplained:
            ours = [p for p in book if (p.symbol, p.side) == (difference.symbol, difference.side)]
            if difference.venue > 0 or not ours:
                unexplained.append(difference)
                continue
            since = min(p.opened_at for p in ours) - CLOSE_SLACK_S
            closes = await self.venue.closed_positions(difference.symbol, difference.side, since)
            fills = venue_close_fills(ours, closes)
            if fills is None:
                unexplained.append(difference)
                continue
            venue_refs = ", ".join(sorted(c.reference for c in closes))
            for position, fill in fills:
                await self.close(position, fill, f"closed at the venue ({venue_refs})")
            explained.append(replace(difference, why=f"closed at the venue: {venue_refs}"))
        return PositionCheck(check.matched, tuple(explained), tuple(unexplained))

    async def _halt(self, check: PositionCheck) -> None:
        """Fail closed: no new order is sent; a critical alert (once per mismatch and day)."""
        reason = "position mismatch with the venue: " + "; ".join(
            d.describe() for d in check.unexplained
        )
        if reason != self.halted:
            log.error("trading halted", extra={"reason": reason})
        self.halted = reason[:1000]
        self.halted_gauge.set(1)
        day = datetime.now(UTC).date().isoformat()
        alert = Alert(
            event_id=f"execution:position-mismatch:{day}:{check.fingerprint()}",
            kind="position_mismatch",
            severity="critical",
            message=(
                f"{self.halted[:700]}. New orders are held back until the venue and the book "
                "agree and the owner clears the halt (POST /positions/reconcile)."
            ),
            source=self.source,
            details={"unexplained": len(check.unexplained), "mode": self.venue.mode},
            timestamp=time.time(),
        )
        async with self.database.connection() as conn, conn.transaction():
            await self.outbox.add(conn, alert, Stream.ALERTS)
        await self.outbox.flush()
