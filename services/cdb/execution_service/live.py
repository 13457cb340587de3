"""Live orders on MEXC: the intent is already committed as ``pending`` with its
``externalOid`` (= ``order_id``) before anything is sent; sending again after a crash or a
timeout uses the same id, so MEXC deduplicates; an order MEXC cannot find is ``unknown``,
never assumed cancelled."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from cdb.core.events import Order
from cdb.execution_service.mexc_client import MexcError, MexcPrivateClient
from cdb.execution_service.paper import Fill

__all__ = ["LiveExecutor", "LiveOutcome"]

SIDE_OPEN: Mapping[str, int] = MappingProxyType({"long": 1, "short": 3})
MARKET_ORDER = 5
ISOLATED = 1
MAINTENANCE_NOTE = (
    "MEXC documents its contract order endpoints as under maintenance for many accounts"
)


@dataclass(frozen=True)
class LiveOutcome:
    kind: Literal["filled", "open", "rejected", "unknown"]
    fill: Fill | None = None
    reason: str = ""


class LiveExecutor:
    def __init__(self, client: MexcPrivateClient, *, leverage: int = 1) -> None:
        self.client = client
        self.leverage = leverage
        self._contracts: dict[str, dict[str, Any]] = {}

    async def contract(self, symbol: str) -> dict[str, Any]:
        if symbol not in self._contracts:
            self._contracts[symbol] = await self.client.contract_detail(symbol)
        return self._contracts[symbol]

    async def prepare(self, order: Order) -> dict[str, Any] | LiveOutcome:
        """The order body MEXC gets, or why this order cannot be sent (a rejection)."""
        try:
            detail = await self.contract(order.symbol)
        except MexcError as error:
            return LiveOutcome("rejected", reason=f"contract {order.symbol}: {error}")
        if detail.get("apiAllowed") is not True:
            return LiveOutcome(
                "rejected",
                reason=f"MEXC contract {order.symbol} has apiAllowed=false: "
                "it cannot be traded through the API",
            )
        size = float(detail.get("contractSize") or 0)
        unit = float(detail.get("volUnit") or 1)
        minimum = float(detail.get("minVol") or unit)
        if size <= 0:
            return LiveOutcome("rejected", reason=f"contract {order.symbol} has no contractSize")
        vol = math.floor(order.quantity / size / unit + 1e-9) * unit
        if vol < minimum:
            return LiveOutcome(
                "rejected",
                reason=f"{order.quantity:g} {order.symbol} is {vol:g} contracts, "
                f"below MEXC's minimum of {minimum:g}",
            )
        return {
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

    async def submit(self, order: Order, body: dict[str, Any]) -> LiveOutcome:
        """POST the order (MEXC's refusal raises :class:`MexcError`), then look it up."""
        await self.client.submit_order(body)
        try:
            return await self.lookup(order)
        except MexcError as error:  # accepted, but not readable now: reconciled later
            return LiveOutcome("open", reason=f"submitted; lookup refused: {error}")

    async def lookup(self, order: Order) -> LiveOutcome:
        """What MEXC knows of the order, by its external id."""
        try:
            data = await self.client.order_by_external_id(order.symbol, order.order_id)
        except MexcError as error:
            if error.not_found:
                return LiveOutcome("unknown", reason="MEXC does not know this externalOid")
            raise
        detail = await self.contract(order.symbol)
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
            return LiveOutcome("filled", fill=fill)
        if state in (4, 5):
            return LiveOutcome("rejected", reason=f"MEXC order state {state} (cancelled/invalid)")
        return LiveOutcome("open", reason=f"MEXC order state {state}")
