"""MEXC contract private order endpoints, as MEXC documents them (contract API v1).

Mounted by mexc_sim's app: ``private_router(sim.price_of, api_keys)``.

* Auth: headers ``ApiKey``, ``Request-Time`` (ms), ``Signature`` = hex
  HMAC-SHA256(secret, accessKey + Request-Time + parameter string), optional
  ``Recv-Window`` (s, default 10, max 60). The parameter string is the raw JSON body for
  POST and the query parameters in dictionary order joined with ``&`` for GET; path
  parameters are not signed.
* Envelope: ``{"success": true, "code": 0, "data": …}`` or, with HTTP 200,
  ``{"success": false, "code": <int>, "message": "<text>"}``; codes from MEXC's table:
  401 unauthorized, 513 request time outside the window, 600 parameter error, 602 signature
  verification failed, 1001 contract does not exist, 2009 position does not exist,
  2013 too many ids to cancel, 2030 externalOid longer than 32. 2040 "order not exist" is
  MEXC's code in cancel replies; the sim also answers it for a lookup of an unknown order.
* ``POST /api/v1/private/order/submit`` is idempotent on ``externalOid`` per key: a
  second submit returns the first order's id. Market orders (type 5, 6) fill at once at
  ``price_of(symbol)`` with the taker fee; limit/IOC/FOK/post-only follow their rules
  against that price; a resting order stays ``state 2`` until cancelled.
* ``GET /api/v1/private/order/external/{symbol}/{external_oid}``,
  ``GET /api/v1/private/order/get/{order_id}``, ``POST /api/v1/private/order/cancel``
  (a JSON list of at most 50 order ids).
* Positions (open even while the order endpoints are "under maintenance"):
  ``GET /api/v1/private/position/open_positions[?symbol=]`` (``data``: a list of
  position objects, ``holdVol`` in contracts, ``positionType`` 1 long 2 short, ``state``
  1 holding) and ``GET /api/v1/private/position/list/history_positions?symbol=&type=
  &page_num=&page_size=`` (closed ones, ``state`` 3). One position per key, contract and
  side (hedge mode): fills of the same side add to it at an averaged price.

State lives in a :class:`PrivateExchange` (pass one in to inspect it or to put the order
endpoints "under maintenance", as MEXC marks them for many accounts).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

__all__ = ["PrivateExchange", "SimOrder", "SimPosition", "private_router"]

TAKER_FEE = 0.0002  # MEXC USDT-M futures taker fee (maker 0 %)
MAKER_FEE = 0.0
MAX_EXTERNAL_OID = 32
MAX_CANCEL_IDS = 50
OPENS: Mapping[int, int] = MappingProxyType({1: 1, 3: 2})  # side → position type (1 long)
CLOSES: Mapping[int, int] = MappingProxyType({4: 1, 2: 2})
BUYS = frozenset({1, 2})  # open long, close short


class MexcRefusal(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class SimOrder:
    order_id: str
    api_key: str
    symbol: str
    external_oid: str
    price: float
    vol: float
    leverage: int
    side: int
    order_type: int
    open_type: int
    state: int = 1
    deal_avg_price: float = 0.0
    deal_vol: float = 0.0
    taker_fee: float = 0.0
    maker_fee: float = 0.0
    profit: float = 0.0
    stop_loss_price: float = 0.0
    take_profit_price: float = 0.0
    position_id: int = 0
    create_time: int = 0
    update_time: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "positionId": self.position_id,
            "price": self.price,
            "vol": self.vol,
            "leverage": self.leverage,
            "side": self.side,
            "category": 1,
            "orderType": self.order_type,
            "dealAvgPrice": self.deal_avg_price,
            "dealVol": self.deal_vol,
            "orderMargin": 0,
            "takerFee": self.taker_fee,
            "makerFee": self.maker_fee,
            "profit": self.profit,
            "feeCurrency": "USDT",
            "openType": self.open_type,
            "state": self.state,
            "externalOid": self.external_oid,
            "errorCode": 0,
            "usedMargin": 0,
            "createTime": self.create_time,
            "updateTime": self.update_time,
            "stopLossPrice": self.stop_loss_price,
            "takeProfitPrice": self.take_profit_price,
        }


@dataclass
class SimPosition:
    position_id: int
    symbol: str
    position_type: int  # 1 long, 2 short
    open_type: int
    leverage: int
    hold_vol: float = 0.0
    open_avg_price: float = 0.0
    close_vol: float = 0.0
    close_avg_price: float = 0.0
    realised: float = 0.0
    state: int = 1  # 1 holding, 3 closed
    create_time: int = 0
    update_time: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "positionId": self.position_id,
            "symbol": self.symbol,
            "positionType": self.position_type,
            "openType": self.open_type,
            "state": self.state,
            "holdVol": self.hold_vol,
            "frozenVol": 0,
            "closeVol": self.close_vol,
            "holdAvgPrice": self.open_avg_price,
            "openAvgPrice": self.open_avg_price,
            "closeAvgPrice": self.close_avg_price,
            "liquidatePrice": 0,
            "oim": 0,
            "im": 0,
            "holdFee": 0,
            "realised": self.realised,
            "leverage": self.leverage,
            "createTime": self.create_time,
            "updateTime": self.update_time,
            "autoAddIm": False,
        }


@dataclass
class PrivateExchange:
    """Orders and positions per API key; no module-level state."""

    taker_fee: float = TAKER_FEE
    maker_fee: float = MAKER_FEE
    under_maintenance: bool = False
    reply_delay_ms: int = 0  # fault: an order is booked at once, its reply comes this late
    contract_size_of: Callable[[str], float] = field(default=lambda _symbol: 1.0)
    orders: dict[str, SimOrder] = field(default_factory=dict)
    by_external: dict[tuple[str, str], str] = field(default_factory=dict)
    holdings: dict[tuple[str, str, int], float] = field(default_factory=dict)
    positions: dict[tuple[str, str, int], SimPosition] = field(default_factory=dict)
    history: dict[str, list[SimPosition]] = field(default_factory=dict)  # per key, closed
    submits: int = 0
    position_queries: int = 0
    positions_delay_ms: int = 0  # fault: a position query is answered this late
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(102015012431820288))

    def submit(self, api_key: str, body: Any, market_price: Callable[[str], float | None]) -> str:
        self.submits += 1
        if self.under_maintenance:
            raise MexcRefusal(9999, "order endpoints are under maintenance")
        if not isinstance(body, dict):
            raise MexcRefusal(600, "Parameter error: body must be a JSON object")
        external = body.get("externalOid")
        if external is not None:
            if not isinstance(external, str) or not external:
                raise MexcRefusal(600, "Parameter error: externalOid")
            if len(external) > MAX_EXTERNAL_OID:
                raise MexcRefusal(2030, "External order ID is too long (Max. 32 bits )")
            existing = self.by_external.get((api_key, external))
            if existing is not None:
                return existing
        symbol, price, vol, side, kind, open_type, leverage = _order_fields(body)
        market = market_price(symbol)
        if market is None:
            raise MexcRefusal(1001, "Contract does not exist")
        held = self.holdings.get((api_key, symbol, CLOSES.get(side, 0)), 0.0)
        if side in CLOSES and held + 1e-12 < vol:
            raise MexcRefusal(2009, "Positions do not exist or have been closed")
        now = int(time.time() * 1000)
        order = SimOrder(
            order_id=str(next(self._ids)),
            api_key=api_key,
            symbol=symbol,
            external_oid=external or "",
            price=price,
            vol=vol,
            leverage=leverage,
            side=side,
            order_type=kind,
            open_type=open_type,
            stop_loss_price=_number(body.get("stopLossPrice"), "stopLossPrice", 0.0),
            take_profit_price=_number(body.get("takeProfitPrice"), "takeProfitPrice", 0.0),
            create_time=now,
            update_time=now,
        )
        marketable = market <= price if side in BUYS else market >= price
        if kind in (5, 6) or (kind in (1, 3, 4) and marketable):
            self._fill(order, market)
        elif kind == 2:
            order.state = 5 if marketable else 2  # post-only would take: invalid
        elif kind in (3, 4):
            order.state = 4  # IOC/FOK not marketable: cancelled at once
        else:
            order.state = 2  # resting limit order
        self.orders[order.order_id] = order
        if external:
            self.by_external[(api_key, external)] = order.order_id
        return order.order_id

    def _fill(self, order: SimOrder, price: float) -> None:
        order.state = 3
        order.deal_avg_price = price
        order.deal_vol = order.vol
        order.taker_fee = price * order.vol * self.contract_size_of(order.symbol) * self.taker_fee
        if order.side in OPENS:
            key = (order.api_key, order.symbol, OPENS[order.side])
            self.holdings[key] = self.holdings.get(key, 0.0) + order.vol
        else:
            key = (order.api_key, order.symbol, CLOSES[order.side])
            self.holdings[key] = self.holdings.get(key, 0.0) - order.vol
        order.position_id = self._book_position(key, order, price)

    def _book_position(self, key: tuple[str, str, int], order: SimOrder, price: float) -> int:
        """The position a fill opens, adds to, reduces or closes; returns its id."""
        now = int(time.time() * 1000)
        position = self.positions.get(key)
        if position is None:  # a close always has one: submit checked the holding
            position = SimPosition(
                position_id=next(self._ids),
                symbol=order.symbol,
                position_type=key[2],
                open_type=order.open_type,
                leverage=order.leverage,
                create_time=now,
            )
            self.positions[key] = position
        position.update_time = now
        if order.side in OPENS:
            held = position.hold_vol + order.vol
            position.open_avg_price = (
                position.open_avg_price * position.hold_vol + price * order.vol
            ) / held
            position.hold_vol = held
            return position.position_id
        closed = position.close_vol + order.vol
        position.close_avg_price = (
            position.close_avg_price * position.close_vol + price * order.vol
        ) / closed
        position.close_vol = closed
        direction = 1.0 if position.position_type == 1 else -1.0
        size = self.contract_size_of(order.symbol)
        position.realised += direction * (price - position.open_avg_price) * order.vol * size
        position.hold_vol = max(0.0, position.hold_vol - order.vol)
        if position.hold_vol <= 1e-12:
            position.state = 3
            del self.positions[key]
            self.history.setdefault(key[0], []).append(position)
        return position.position_id

    def open_positions(self, api_key: str, symbol: str | None) -> list[dict[str, Any]]:
        self.position_queries += 1
        return [
            p.describe()
            for (owner, sym, _), p in sorted(self.positions.items())
            if owner == api_key and (symbol is None or sym == symbol)
        ]

    def history_positions(
        self, api_key: str, symbol: str | None, kind: int | None
    ) -> list[dict[str, Any]]:
        self.position_queries += 1
        return [
            p.describe()
            for p in reversed(self.history.get(api_key, []))
            if (symbol is None or p.symbol == symbol) and (kind is None or p.position_type == kind)
        ]

    def find(self, api_key: str, order_id: str) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None or order.api_key != api_key:
            raise MexcRefusal(2040, "order not exist")
        return order

    def find_external(self, api_key: str, symbol: str, external_oid: str) -> SimOrder:
        order_id = self.by_external.get((api_key, external_oid))
        order = self.orders.get(order_id or "")
        if order is None or order.symbol != symbol:
            raise MexcRefusal(2040, "order not exist")
        return order

    def cancel(self, api_key: str, body: Any) -> list[dict[str, Any]]:
        if self.under_maintenance:
            raise MexcRefusal(9999, "order endpoints are under maintenance")
        if not isinstance(body, list) or not body:
            raise MexcRefusal(600, "Parameter error: a list of order ids is required")
        if len(body) > MAX_CANCEL_IDS:
            raise MexcRefusal(2013, "Cancel orders over maximum limit")
        replies = []
        for raw in body:
            order_id = str(raw)
            order = self.orders.get(order_id)
            if order is None or order.api_key != api_key:
                replies.append(
                    {"orderId": order_id, "errorCode": 2040, "errorMsg": "order not exist"}
                )
            elif order.state not in (1, 2):
                replies.append(
                    {
                        "orderId": order_id,
                        "errorCode": 2041,
                        "errorMsg": "order state cannot be cancelled",
                    }
                )
            else:
                order.state = 4
                order.update_time = int(time.time() * 1000)
                replies.append({"orderId": order_id, "errorCode": 0, "errorMsg": "success"})
        return replies


def _number(value: Any, name: str, default: float | None = None) -> float:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MexcRefusal(600, f"Parameter error: {name}")
    try:
        number = float(value)
    except ValueError:
        raise MexcRefusal(600, f"Parameter error: {name}") from None
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        raise MexcRefusal(600, f"Parameter error: {name}")
    return number


def _integer(value: Any, name: str, allowed: set[int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise MexcRefusal(600, f"Parameter error: {name}")
    return value


def _order_fields(body: dict[str, Any]) -> tuple[str, float, float, int, int, int, int]:
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise MexcRefusal(600, "Parameter error: symbol")
    price = _number(body.get("price"), "price")
    vol = _number(body.get("vol"), "vol")
    if vol <= 0:
        raise MexcRefusal(2011, "Order quantity error")
    side = _integer(body.get("side"), "side", {1, 2, 3, 4})
    kind = _integer(body.get("type"), "type", {1, 2, 3, 4, 5, 6})
    open_type = _integer(body.get("openType"), "openType", {1, 2})
    leverage = body.get("leverage", 0)
    if open_type == 1 and (
        isinstance(leverage, bool) or not isinstance(leverage, int) or leverage < 1
    ):
        raise MexcRefusal(2006, "Leverage ratio error")
    return symbol, price, vol, side, kind, open_type, int(leverage or 0)


def _fail(code: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "code": code, "message": message})


def _ok(data: Any) -> JSONResponse:
    return JSONResponse({"success": True, "code": 0, "data": data})


def signature(secret: str, access_key: str, request_time: str, parameters: str) -> str:
    message = f"{access_key}{request_time}{parameters}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def private_router(
    price_of: Callable[[str], float | None],
    api_keys: dict[str, str],
    *,
    exchange: PrivateExchange | None = None,
    contract_size_of: Callable[[str], float] | None = None,
) -> APIRouter:
    """The private order endpoints for the keys in ``api_keys`` (access key → secret).

    ``contract_size_of(symbol)`` (base units per contract) makes fees notional-true;
    without it a contract counts as one unit.
    """
    book = exchange if exchange is not None else PrivateExchange()
    if contract_size_of is not None:
        book.contract_size_of = contract_size_of
    router = APIRouter()

    def authenticate(request: Request, parameters: str) -> str:
        access_key = request.headers.get("ApiKey", "")
        secret = api_keys.get(access_key)
        if not access_key or secret is None:
            raise MexcRefusal(401, "Unauthorized")
        raw_time = request.headers.get("Request-Time", "")
        if not raw_time.isdigit():
            raise MexcRefusal(600, "Parameter error: Request-Time")
        raw_window = request.headers.get("Recv-Window", "10")
        window = int(raw_window) if raw_window.isdigit() else 10
        window = min(max(window, 1), 60)
        if abs(time.time() * 1000 - int(raw_time)) > window * 1000:
            raise MexcRefusal(
                513, "Invalid request (for open api serves time more or less than 10s)"
            )
        expected = signature(secret, access_key, raw_time, parameters)
        if not hmac.compare_digest(expected, request.headers.get("Signature", "").lower()):
            raise MexcRefusal(602, "Verify failed")
        return access_key

    def query_parameters(request: Request) -> str:
        return "&".join(f"{k}={v}" for k, v in sorted(request.query_params.items()))

    async def json_body(request: Request) -> tuple[str, Any]:
        raw = (await request.body()).decode("utf-8", errors="replace")
        try:
            return raw, json.loads(raw) if raw else None
        except ValueError:
            return raw, _Unparsable

    @router.post("/api/v1/private/order/submit")
    async def submit(request: Request) -> JSONResponse:
        raw, body = await json_body(request)
        try:
            key = authenticate(request, raw)
            if body is _Unparsable:
                raise MexcRefusal(601, "Data decoding error")
            order_id = book.submit(key, body, price_of)
        except MexcRefusal as refusal:
            return _fail(refusal.code, refusal.message)
        if book.reply_delay_ms:  # booked; a client that dies or times out now never hears it
            await asyncio.sleep(book.reply_delay_ms / 1000)
        return _ok(order_id)

    @router.get("/api/v1/private/order/external/{symbol}/{external_oid}")
    async def by_external(request: Request, symbol: str, external_oid: str) -> JSONResponse:
        try:
            key = authenticate(request, query_parameters(request))
            return _ok(book.find_external(key, symbol, external_oid).describe())
        except MexcRefusal as refusal:
            return _fail(refusal.code, refusal.message)

    @router.get("/api/v1/private/order/get/{order_id}")
    async def by_id(request: Request, order_id: str) -> JSONResponse:
        try:
            key = authenticate(request, query_parameters(request))
            return _ok(book.find(key, order_id).describe())
        except MexcRefusal as refusal:
            return _fail(refusal.code, refusal.message)

    def optional_int(request: Request, name: str) -> int | None:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit():
            raise MexcRefusal(600, f"Parameter error: {name}")
        return int(raw)

    @router.get("/api/v1/private/position/open_positions")
    async def open_positions(request: Request) -> JSONResponse:
        try:
            key = authenticate(request, query_parameters(request))
            symbol = request.query_params.get("symbol") or None
            rows = book.open_positions(key, symbol)
        except MexcRefusal as refusal:
            return _fail(refusal.code, refusal.message)
        if book.positions_delay_ms:  # read now; a client that dies meanwhile never hears it
            await asyncio.sleep(book.positions_delay_ms / 1000)
        return _ok(rows)

    @router.get("/api/v1/private/position/list/history_positions")
    async def history_positions(request: Request) -> JSONResponse:
        try:
            key = authenticate(request, query_parameters(request))
            page = optional_int(request, "page_num") or 1
            size = min(optional_int(request, "page_size") or 20, 100)
            rows = book.history_positions(
                key, request.query_params.get("symbol") or None, optional_int(request, "type")
            )
        except MexcRefusal as refusal:
            return _fail(refusal.code, refusal.message)
        return _ok(rows[(page - 1) * size : page * size])

    @router.post("/api/v1/private/order/cancel")
    async def cancel(request: Request) -> JSONResponse:
        raw, body = await json_body(request)
        try:
            key = authenticate(request, raw)
            if body is _Unparsable:
                raise MexcRefusal(601, "Data decoding error")
            return _ok(book.cancel(key, body))
        except MexcRefusal as refusal:
            return _fail(refusal.code, refusal.message)

    return router


_Unparsable = object()
