"""The paper venue: fills at the latest market price with slippage and the taker fee
(:class:`cdb.execution_service.paper.PaperFillModel`), closes positions at their stop
when a price reaches it. It keeps nothing of its own: the book in PostgreSQL is its
state, so a lookup never finds an order (a submit begun before a crash is simply made
again) and there are no positions to reconcile."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from cdb.core.events import Order, TradingMode
from cdb.execution_service.book import Fill, OpenPosition
from cdb.execution_service.paper import PaperFillModel
from cdb.execution_service.venue import (
    PriceMove,
    Submission,
    VenueClose,
    VenueOutcome,
    VenuePosition,
)

__all__ = ["PaperVenue"]


class PaperVenue:
    mode: TradingMode = "paper"
    in_book = True

    def __init__(self, model: PaperFillModel, price_of: Callable[[str], float | None]) -> None:
        self.model = model
        self.price_of = price_of  # the latest market price the service has seen

    async def prepare(self, order: Order) -> Submission | VenueOutcome:
        return Submission(order)

    async def submit(self, submission: Submission) -> VenueOutcome:
        order = submission.order
        return VenueOutcome("filled", self.model.fill_open(order, self.price_of(order.symbol)))

    async def lookup(self, order: Order) -> VenueOutcome:
        return VenueOutcome("unknown", reason="the paper venue keeps no orders")

    def stop_exit(self, position: OpenPosition, move: PriceMove) -> Fill | None:
        exit_price = self.model.exit_price_for(
            position, low=move.low, high=move.high, open_=move.open_, last=move.last,
            start=move.start, end=move.end,
        )  # fmt: skip
        return None if exit_price is None else self.model.fill_close(position, exit_price)

    async def open_positions(self) -> Sequence[VenuePosition] | None:
        return None

    async def closed_positions(
        self, symbol: str, side: Literal["long", "short"], since: float
    ) -> Sequence[VenueClose]:
        return []  # it closes nothing on its own: every paper close is booked by cdb

    async def close(self) -> None:
        return None
