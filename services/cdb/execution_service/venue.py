"""The execution venue port: what execution_service asks of the place its orders go.

Two venues implement it: :class:`cdb.execution_service.paper_venue.PaperVenue` (simulated
fills) and :class:`cdb.execution_service.live.MexcVenue` (MEXC's contract API). The service
drives every order the same way whichever venue it has, and keeps for itself what must not
differ between them: the transaction, the outbox and the metrics (as nautilus_trader's
execution engine keeps the cache and the message bus while its execution clients only
talk to their venue).

One order, from the service's side::

    plan = await venue.prepare(order)       # VenueOutcome: refused before anything is sent
    outcome = await venue.submit(plan)      # the send (VenueRefused: the venue said no)
    outcome = await venue.lookup(order)     # later: what the venue knows of it, by order_id
    fill = venue.stop_exit(position, move)  # a price moved: does this venue close it here?
    held = await venue.open_positions()     # reconciliation: what the venue holds
    gone = await venue.closed_positions(symbol, side, since)  # what it closed on its own

``submit`` is idempotent on ``order.order_id`` (the client order id): sending the same
order twice never makes two. ``lookup`` answers ``unknown`` only when the venue has no
trace of the id; it never guesses a cancellation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cdb.core.events import Order, TradingMode
from cdb.execution_service.book import Fill, OpenPosition

__all__ = [
    "ExecutionVenue",
    "OutcomeKind",
    "PriceMove",
    "Submission",
    "VenueClose",
    "VenueOutcome",
    "VenuePosition",
    "VenueRefused",
]

OutcomeKind = Literal["filled", "open", "rejected", "unknown"]


@dataclass(frozen=True)
class VenueOutcome:
    """What became of an order at the venue: ``filled`` (with its fill), ``open`` (still
    working: looked up again), ``rejected`` or ``unknown`` (no trace at the venue)."""

    kind: OutcomeKind
    fill: Fill | None = None
    reason: str = ""


@dataclass(frozen=True)
class Submission:
    """An order the venue accepted to send, with the request it will send."""

    order: Order
    request: Mapping[str, Any] = field(default_factory=dict)


class VenueRefused(Exception):
    """The venue understood the request and refused it (a rejection, never transient:
    transient trouble raises :class:`cdb.core.bus.TransientError`)."""


@dataclass(frozen=True)
class PriceMove:
    """A price from ``start`` to ``end`` (epoch s): a 1-minute bar, or a tick (start ==
    end, low == high); ``open_`` is None for a tick."""

    symbol: str
    low: float
    high: float
    open_: float | None
    last: float
    start: float
    end: float


@dataclass(frozen=True)
class VenuePosition:
    """A position the venue holds, in base units (MEXC's contracts times the contract size)."""

    symbol: str
    side: Literal["long", "short"]
    quantity: float
    entry_price: float


@dataclass(frozen=True)
class VenueClose:
    """A position the venue closed on its own (its stop, a liquidation, a close by hand),
    in base units, at its average close price, at ``closed_at`` (epoch s)."""

    symbol: str
    side: Literal["long", "short"]
    quantity: float
    price: float
    closed_at: float
    reference: str  # the venue's name for it, for people


class ExecutionVenue(Protocol):
    """The port. ``mode`` is recorded with every order and result of this venue.
    ``in_book``: the venue is cdb's own book (paper), so ``prepare`` and ``submit`` only
    compute, reach nothing outside and keep nothing: the service then sends and settles
    an order in the one transaction that records it."""

    mode: TradingMode
    in_book: bool

    async def prepare(self, order: Order) -> Submission | VenueOutcome:
        """The request to send, or why the order cannot be sent (a ``rejected``
        outcome): nothing has reached the venue either way."""
        ...

    async def submit(self, submission: Submission) -> VenueOutcome:
        """Send it (idempotent on ``order_id``); raises :class:`VenueRefused`."""
        ...

    async def lookup(self, order: Order) -> VenueOutcome:
        """What the venue knows of ``order`` by its id; raises :class:`VenueRefused`
        when the venue refuses to say (e.g. a revoked key)."""
        ...

    def stop_exit(self, position: OpenPosition, move: PriceMove) -> Fill | None:
        """The close fill when cdb itself must close ``position`` at its stop on this
        move; None when the stop was not reached or the venue holds the stop itself."""
        ...

    async def open_positions(self) -> Sequence[VenuePosition] | None:
        """What the venue holds now; None when the venue keeps no positions apart from
        cdb's own book (paper), so there is nothing to reconcile."""
        ...

    async def closed_positions(
        self, symbol: str, side: Literal["long", "short"], since: float
    ) -> Sequence[VenueClose]:
        """Positions of ``symbol`` and ``side`` the venue closed at or after ``since``."""
        ...

    async def close(self) -> None: ...
