"""Position reconciliation, pure: what a venue holds against cdb's book.

For each (symbol, side) the venue's quantity is compared with the sum of the book's open
positions of that venue. A difference is *explained* when

* the venue holds more and orders still in flight (``pending``/``unknown``: a submit the
  venue booked and cdb has not yet) cover the excess: order reconciliation books them;
* the book holds more and positions cdb booked after the venue's snapshot was taken
  (a fill recorded while the query was on its way) cover the excess.

Anything else is *unexplained*: the book no longer says what the venue holds, and the
service fails closed (see :mod:`cdb.execution_service.service`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cdb.core.events import Order
from cdb.execution_service.book import OpenPosition
from cdb.execution_service.venue import VenuePosition

__all__ = ["Difference", "PositionCheck", "compare_positions"]

Side = Literal["long", "short"]
REL_TOLERANCE = 1e-6  # the book stores MEXC's own fill quantities; only float noise differs


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
