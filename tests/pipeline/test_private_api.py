"""mexc_sim's private order endpoints, served on a real port, spoken to by
execution_service's signed client and by raw HTTP for what a client would never send."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from cdb.execution_service.mexc_client import MexcError, MexcPrivateClient, sign
from cdb.mexc_sim.private_api import PrivateExchange, private_router
from tests.support.asgi import serve

KEY, SECRET = "mx0-test-access", "test-only-secret-not-real"
PRICES = {"BTC_USDT": 43000.0, "ETH_USDT": 2300.0}


@pytest.fixture
async def exchange() -> AsyncIterator[tuple[PrivateExchange, str]]:
    book = PrivateExchange()
    app = FastAPI()
    app.include_router(private_router(PRICES.get, {KEY: SECRET}, exchange=book))
    async with serve(app) as url:
        yield book, url


def order_body(external: str | None = "ord-1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": "BTC_USDT",
        "price": 43000.0,
        "vol": 3,
        "leverage": 1,
        "side": 1,
        "type": 5,
        "openType": 1,
        "externalOid": external,
        "stopLossPrice": 42140.0,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


async def test_a_signed_market_order_fills_and_is_found_by_its_external_id(
    exchange: tuple[PrivateExchange, str],
) -> None:
    _book, url = exchange
    client = MexcPrivateClient(url, SecretStr(KEY), SecretStr(SECRET))
    try:
        order_id = await client.submit_order(order_body("ord-abc"))
        found = await client.order_by_external_id("BTC_USDT", "ord-abc")
        assert found["orderId"] == order_id
        assert found["state"] == 3 and found["dealVol"] == 3 and found["dealAvgPrice"] == 43000.0
        assert found["takerFee"] == pytest.approx(43000.0 * 3 * 0.0002)
        assert found["externalOid"] == "ord-abc" and found["stopLossPrice"] == 42140.0
    finally:
        await client.close()


async def test_submit_is_idempotent_on_external_oid(exchange: tuple[PrivateExchange, str]) -> None:
    book, url = exchange
    client = MexcPrivateClient(url, SecretStr(KEY), SecretStr(SECRET))
    try:
        first = await client.submit_order(order_body("same-id"))
        again = await client.submit_order(order_body("same-id"))
        assert first == again
        assert len(book.orders) == 1 and book.submits == 2
        assert book.holdings[(KEY, "BTC_USDT", 1)] == 3  # filled once, not twice
    finally:
        await client.close()


async def test_mexc_error_codes(exchange: tuple[PrivateExchange, str]) -> None:
    book, url = exchange
    client = MexcPrivateClient(url, SecretStr(KEY), SecretStr(SECRET))
    try:
        cases = [
            (order_body("x" * 33), 2030),
            (order_body("a", symbol="NOPE_USDT"), 1001),
            (order_body("b", side=7), 600),
            (order_body("c", vol=0), 2011),
            (order_body("d", leverage=None), 2006),
            (order_body("e", side=4), 2009),  # close long without a position
        ]
        for body, code in cases:
            with pytest.raises(MexcError) as refused:
                await client.submit_order(body)
            assert refused.value.code == code, body
        with pytest.raises(MexcError) as missing:
            await client.order_by_external_id("BTC_USDT", "never-sent")
        assert missing.value.not_found
        book.under_maintenance = True
        with pytest.raises(MexcError) as maintenance:
            await client.submit_order(order_body("m"))
        assert "maintenance" in str(maintenance.value)
    finally:
        await client.close()


async def test_signature_time_window_and_key_are_checked(
    exchange: tuple[PrivateExchange, str],
) -> None:
    _, url = exchange
    body = json.dumps(order_body("sig-1"))
    now = str(int(time.time() * 1000))

    def headers(**override: str) -> dict[str, str]:
        base = {
            "ApiKey": KEY,
            "Request-Time": now,
            "Signature": sign(SECRET, KEY, now, body),
            "Content-Type": "application/json",
        }
        return {**base, **override}

    async with httpx.AsyncClient(base_url=url) as http:
        submit = "/api/v1/private/order/submit"

        async def code(**override: str) -> int:
            reply = await http.post(submit, content=body, headers=headers(**override))
            assert reply.status_code == 200  # MEXC reports errors in the envelope
            return int(reply.json()["code"])

        assert await code(Signature=sign("wrong-secret", KEY, now, body)) == 602
        assert await code(ApiKey="someone-else") == 401
        old = str(int(time.time() * 1000) - 30_000)
        assert await code(**{"Request-Time": old, "Signature": sign(SECRET, KEY, old, body)}) == 513
        tampered = body.replace('"vol": 3', '"vol": 300')
        reply = await http.post(submit, content=tampered, headers=headers())
        assert reply.json()["code"] == 602  # the signature covers the body
        assert await code() == 0


async def test_cancel_a_resting_limit_order(exchange: tuple[PrivateExchange, str]) -> None:
    _book, url = exchange
    client = MexcPrivateClient(url, SecretStr(KEY), SecretStr(SECRET))
    try:
        resting = await client.submit_order(order_body("lim-1", type=1, price=40000.0))
        filled = await client.submit_order(order_body("mkt-1"))
        replies = await client.cancel_orders([resting, filled, "123"])
        assert [r["errorCode"] for r in replies] == [0, 2041, 2040]
        assert (await client.order_by_external_id("BTC_USDT", "lim-1"))["state"] == 4
        with pytest.raises(MexcError) as too_many:
            await client.cancel_orders([str(i) for i in range(51)])
        assert too_many.value.code == 2013
    finally:
        await client.close()
