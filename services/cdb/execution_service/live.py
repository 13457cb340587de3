"""The MEXC venue: live orders on MEXC's contract API. The service commits the intent
(``pending``, ``externalOid`` = ``order_id``) before anything is sent; sending again after
a crash or a timeout uses the same id, so MEXC deduplicates; an order MEXC cannot find is
``unknown``, never assumed cancelled. Stops travel with the order (``stopLossPrice``) and
MEXC executes them; positions come from ``GET /api/v1/private/position/open_positions``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

from cdb.core.events import Order, TradingMode
from cdb.execution_service.book import Fill, OpenPosition
from cdb.execution_service.mexc_client import MexcError, MexcPrivateClient
from cdb.execution_service.venue import (
    PriceMove,
    Submission,
    VenueClose,
    VenueOutcome,
    VenuePosition,
    VenueRefused,
)

__all__ = ["MAINTENANCE_NOTE", "MexcVenue"]

SIDE_OPEN: Mapping[str, int] = MappingProxyType({"long": 1, "short": 3})
MARKET_ORDER = 5
ISOLATED = 1
MAINTENANCE_NOTE = (
    "MEXC documents its contract order endpoints as under maintenance for many accounts"
)

POSITION_SIDE: Mapping[int, Literal["long", "short"]] = MappingProxyType({1: "long", 2: "short"})
POSITION_TYPE: Mapping[str, int] = MappingProxyType({"long": 1, "short": 2})
CLOSED = 3  # position state


class MexcVenue:
    mode: TradingMode = "live"
    in_book = False

    def __init__(self, client: MexcPrivateClient, *, leverage: int = 1) -> None:
        self.client = client
        self.leverage = leverage
        self._contracts: dict[str, dict[str, Any]] = {}

    async def contract(self, symbol: str) -> dict[str, Any]:
        if symbol not in self._contracts:
            self._contracts[symbol] = await self.client.contract_detail(symbol)
        return self._contracts[symbol]

    async def prepare(self, order: Order) -> Submission | VenueOutcome:
        """The order body MEXC gets, or why this order cannot be sent (a rejection)."""
        try:
            detail = await self.contract(order.symbol)
        except MexcError as error:
            return VenueOutcome("rejected", reason=f"contract {order.symbol}: {error}")
        if detail.get("apiAllowed") is not True:
            return VenueOutcome(
                "rejected",
                reason=f"MEXC contract {order.symbol} has apiAllowed=false: "
                "it cannot be traded through the API",
            )
        size = float(detail.get("contractSize") or 0)
        unit = float(detail.get("volUnit") or 1)
        minimum = float(detail.get("minVol") or unit)
        if size <= 0:
            return VenueOutcome("rejected", reason=f"contract {order.symbol} has no contractSize")
        vol = math.floor(order.quantity / size / unit + 1e-9) * unit
        if vol < minimum:
            return VenueOutcome(
                "rejected",
                reason=f"{order.quantity:g} {order.symbol} is {vol:g} contracts, "
                f"below MEXC's minimum of {minimum:g}",
            )
        request = {
            "symbol": order.symbol,
            "price": order.price,
            "vol": vol,
            "leverage": self.leverage,
            "side": SIDE_OPEN[order.side],
            "type": MARKET_ORDER,
            "openType": ISOLATED,
            "externalOid": order.order_id,
            "stopLossPrice": order.stop_loss,
        }
        return Submission(order, request)

    async def submit(self, submission: Submission) -> VenueOutcome:
        """POST the order (MEXC's refusal raises :class:`VenueRefused`), then look it up."""
        try:
            await self.client.submit_order(dict(submission.request))
        except MexcError as error:
            raise VenueRefused(f"{error} ({MAINTENANCE_NOTE})") from None
        try:
            return await self.lookup(submission.order)
        except VenueRefused as error:  # accepted, but not readable now: reconciled later
            return VenueOutcome("open", reason=f"submitted; lookup refused: {error}")

    async def lookup(self, order: Order) -> VenueOutcome:
        """What MEXC knows of the order, by its external id."""
        try:
            data = await self.client.order_by_external_id(order.symbol, order.order_id)
        except MexcError as error:
            if error.not_found:
                return VenueOutcome("unknown", reason="MEXC does not know this externalOid")
            raise VenueRefused(str(error)) from None
        try:
            detail = await self.contract(order.symbol)
        except MexcError as error:
            raise VenueRefused(f"contract {order.symbol}: {error}") from None
        size = float(detail.get("contractSize") or 1)
        state = int(data.get("state", 0))
        dealt = float(data.get("dealVol") or 0)
        fill = None
        if dealt > 0:
            fill = Fill(
                price=float(data.get("dealAvgPrice") or order.price),
                quantity=dealt * size,
                fee=float(data.get("takerFee") or 0) + float(data.get("makerFee") or 0),
            )
        if state == 3 or (state in (4, 5) and fill is not None):
            return VenueOutcome("filled", fill=fill)
        if state in (4, 5):
            return VenueOutcome("rejected", reason=f"MEXC order state {state} (cancelled/invalid)")
        return VenueOutcome("open", reason=f"MEXC order state {state}")

    def stop_exit(self, position: OpenPosition, move: PriceMove) -> Fill | None:
        return None  # the stop went with the order (stopLossPrice): MEXC executes it

    async def open_positions(self) -> Sequence[VenuePosition] | None:
        """Every open position of the key, in base units (``holdVol`` times the contract size)."""
        try:
            rows = await self.client.open_positions()
        except MexcError as error:
            raise VenueRefused(str(error)) from None
        held = []
        for row in rows:
            side = POSITION_SIDE.get(int(row.get("positionType", 0)))
            vol = float(row.get("holdVol") or 0)
            if side is None or vol <= 0 or int(row.get("state", 1)) == 3:
                continue  # closed, or a shape this venue does not trade
            symbol = str(row["symbol"])
            try:
                size = float((await self.contract(symbol)).get("contractSize") or 1)
            except MexcError as error:
                raise VenueRefused(f"contract {symbol}: {error}") from None
            held.append(
                VenuePosition(
                    symbol=symbol,
                    side=side,
                    quantity=vol * size,
                    entry_price=float(row.get("holdAvgPrice") or row.get("openAvgPrice") or 0),
                )
            )
        return held

    async def closed_positions(
        self, symbol: str, side: Literal["long", "short"], since: float
    ) -> Sequence[VenueClose]:
        """From ``GET /api/v1/private/position/list/history_positions`` (the newest 100)."""
        try:
            rows = await self.client.history_positions(symbol, POSITION_TYPE[side])
            size = float((await self.contract(symbol)).get("contractSize") or 1)
        except MexcError as error:
            raise VenueRefused(str(error)) from None
        closes = []
        for row in rows:
            closed_at = float(row.get("updateTime") or 0) / 1000
            vol = float(row.get("closeVol") or 0)
            if int(row.get("state", 0)) != CLOSED or closed_at < since or vol <= 0:
                continue
            closes.append(
                VenueClose(
                    symbol=symbol,
                    side=side,
                    quantity=vol * size,
                    price=float(row.get("closeAvgPrice") or 0),
                    closed_at=closed_at,
                    reference=f"MEXC position {row.get('positionId')}",
                )
            )
        return closes

    async def close(self) -> None:
        await self.client.close()
