"""Position reconciliation, pure: what a venue holds against cdb's book.

For each (symbol, side) the venue's quantity is compared with the sum of the book's open
positions of that venue. A difference is *explained* when

* the venue holds more and orders still in flight (``pending``/``unknown``: a submit the
  venue booked and cdb has not yet) cover the excess: order reconciliation books them;
* the book holds more and positions cdb booked after the venue's snapshot was taken
  (a fill recorded while the query was on its way) cover the excess.

A third explanation needs the venue's history, so the service asks for it only where it
can apply (:func:`book_venue_closes`): the venue holds nothing of a (symbol, side) the book
holds, and the positions the venue closed on its own since the book's opened them (its
stop, a liquidation, a close by hand) add up to exactly what the book holds. Those closes
are then booked, at the venue's average close price.

Anything else is *unexplained*: the book no longer says what the venue holds, and the
service fails closed (see :mod:`cdb.execution_service.service`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cdb.core.events import Order
from cdb.execution_service.book import Fill, OpenPosition
from cdb.execution_service.venue import VenueClose, VenuePosition

__all__ = [
    "CLOSE_SLACK_S",
    "Difference",
    "PositionCheck",
    "compare_positions",
    "venue_close_fills",
]

Side = Literal["long", "short"]
REL_TOLERANCE = 1e-6  # the book stores MEXC's own fill quantities; only float noise differs
# a venue close counts from this long before the book opened the position: the venue
# filled it (and may have stopped it out) before cdb booked the fill; an older close
# taken in by mistake makes the sum too large, which is a mismatch, never a wrong close
CLOSE_SLACK_S = 60.0


@dataclass(frozen=True)
class Difference:
    symbol: str
    side: Side
    venue: float
    book: float
    why: str  # the explanation, or what is wrong

    def describe(self) -> str:
        return f"{self.symbol} {self.side}: venue {self.venue:g}, book {self.book:g} ({self.why})"


@dataclass(frozen=True)
class PositionCheck:
    matched: int = 0
    explained: tuple[Difference, ...] = ()
    unexplained: tuple[Difference, ...] = ()

    @property
    def result(self) -> Literal["matched", "explained", "mismatch"]:
        if self.unexplained:
            return "mismatch"
        return "explained" if self.explained else "matched"

    def fingerprint(self) -> str:
        """Stable for the same unexplained differences (an alert's event id)."""
        text = "|".join(sorted(d.describe() for d in self.unexplained))
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def _sum(quantities: Iterable[float]) -> float:
    return sum(quantities, 0.0)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOLERANCE * max(abs(a), abs(b), 1e-9)


def compare_positions(
    held: Sequence[VenuePosition],
    book: Sequence[OpenPosition],
    in_flight: Sequence[Order],
    snapshot_at: float,
) -> PositionCheck:
    """``held`` was read from the venue at ``snapshot_at`` (epoch s), then ``book`` and
    ``in_flight`` from the store."""
    keys = {(p.symbol, p.side) for p in held} | {(p.symbol, p.side) for p in book}
    matched = 0
    explained: list[Difference] = []
    unexplained: list[Difference] = []
    for symbol, side in sorted(keys):
        venue = _sum(p.quantity for p in held if (p.symbol, p.side) == (symbol, side))
        ours = [p for p in book if (p.symbol, p.side) == (symbol, side)]
        booked = _sum(p.quantity for p in ours)
        if _close(venue, booked):
            matched += 1
            continue
        if venue > booked:
            orders = [o for o in in_flight if (o.symbol, o.side) == (symbol, side)]
            cover = _sum(o.quantity for o in orders)
            if orders and venue - booked <= cover * (1 + REL_TOLERANCE):
                ids = ", ".join(o.order_id for o in orders)
                explained.append(
                    Difference(symbol, side, venue, booked, f"submits not booked yet: {ids}")
                )
                continue
            why = "the venue holds more than the book and no order in flight covers it"
        else:
            late = [p for p in ours if p.opened_at >= snapshot_at]
            cover = _sum(p.quantity for p in late)
            if late and booked - venue <= cover * (1 + REL_TOLERANCE):
                ids = ", ".join(p.order_id for p in late)
                explained.append(
                    Difference(symbol, side, venue, booked, f"booked after the snapshot: {ids}")
                )
                continue
            why = "the book holds more than the venue"
        unexplained.append(Difference(symbol, side, venue, booked, why))
    return PositionCheck(matched, tuple(explained), tuple(unexplained))


def venue_close_fills(
    ours: Sequence[OpenPosition], closes: Sequence[VenueClose]
) -> list[tuple[OpenPosition, Fill]] | None:
    """The close fill of each of ``ours`` (one symbol and side, none of it held at the venue
    any more) when the venue's own closes since they opened add up to exactly their
    quantity; None when they do not (unexplained)."""
    if not ours:
        return None
    since = min(p.opened_at for p in ours) - CLOSE_SLACK_S
    taken = [c for c in closes if c.closed_at >= since]
    quantity = _sum(c.quantity for c in taken)
    booked = _sum(p.quantity for p in ours)
    if not taken or not _close(quantity, booked):
        return None
    price = _sum(c.price * c.quantity for c in taken) / quantity
    fills = []
    for position in ours:
        direction = 1.0 if position.side == "long" else -1.0
        pnl = direction * (price - position.entry_price) * position.quantity
        # the fee of a venue's close is not in its position history: booked as 0
        fills.append((position, Fill(price=price, quantity=position.quantity, fee=0.0,
                                     realized_pnl=pnl)))  # fmt: skip
    return fills
