"""The kernel's bot_rest client (cdb.core.rest_client) against the real bot_rest process,
with mexc_sim as the exchange: every endpoint, every kind of failure."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from cdb.core.rest import ContractOut, KlinesOut, TickersOut, UniverseOut
from cdb.core.rest_client import (
    BotRestClient,
    BotRestMalformed,
    BotRestRefused,
    BotRestUnavailable,
)
from cdb.mexc_sim.app import running_simulator
from cdb.mexc_sim.config import SimConfig
from tests.support import ServiceProcess, free_port


async def test_every_endpoint_through_the_typed_client(
    redis_only_env: dict[str, str], tmp_path: Path
) -> None:
    config = SimConfig(port=0, symbols=4, seed=7, history_min=30)
    async with running_simulator(config) as sim:
        env = {**redis_only_env, "MEXC_REST_URL": sim.rest_url}
        with ServiceProcess("cdb.bot_rest", env, tmp_path) as rest:
            rest.wait_healthy(accept=("ok", "stale"))  # the sim serves from this loop: async
            async with BotRestClient(rest.url) as client:
                universe = await client.universe()
                tickers = await client.tickers()
                one = await client.tickers("eth_usdt")
                end = int(time.time()) // 60 * 60 - 120
                klines = await client.klines("BTC_USDT", end - 10 * 60, end)
                open_ended = await client.klines("BTC_USDT", end - 5 * 60)
                with pytest.raises(BotRestRefused) as unknown:
                    await client.klines("NOPE_USDT", end - 60, end)
                with pytest.raises(BotRestRefused) as bad:
                    await client.klines("btcusdt", end - 60, end)
                with pytest.raises(BotRestRefused) as no_ticker:
                    await client.tickers("NOPE_USDT")
                openapi = (await client.client.get(f"{rest.url}/openapi.json")).json()

    assert isinstance(universe, UniverseOut) and universe.count == 4
    assert [c.symbol for c in universe.symbols] == sorted(c.symbol for c in universe.symbols)
    assert all(isinstance(c, ContractOut) and c.contract_size > 0 for c in universe.symbols)
    assert isinstance(tickers, TickersOut) and tickers.count == 4
    assert [t.symbol for t in one.tickers] == ["ETH_USDT"]
    assert isinstance(klines, KlinesOut) and klines.symbol == "BTC_USDT"
    assert [b.time for b in klines.bars] == list(range(end - 10 * 60, end + 60, 60))
    assert open_ended.bars[0].time == end - 5 * 60 and open_ended.end >= end
    # error answers are the contract's ErrorOut, kept on the exception
    assert unknown.value.status == 502 and unknown.value.body is not None
    assert (unknown.value.body.error, unknown.value.body.code) == ("mexc_error", 1001)
    assert "MEXC code 1001" in str(unknown.value)
    assert bad.value.status == 400 and bad.value.body is not None
    assert bad.value.body.error == "bad_request"
    assert no_ticker.value.status == 404
    # the routes declare the kernel's models (what the schemas in schemas/ are made from)
    for path, model in (("/universe", "UniverseOut"), ("/tickers", "TickersOut"),
                        ("/klines/{symbol}", "KlinesOut")):  # fmt: skip
        responses = openapi["paths"][path]["get"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
            f"/{model}"
        )
        assert responses["502"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/ErrorOut"
        )


async def test_a_malformed_answer_is_a_clear_error_naming_the_fields() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/universe":  # a contract without its fields
            return httpx.Response(200, json={"count": 1, "symbols": [{"symbol": "BTC_USDT"}]})
        if request.url.path == "/tickers":
            return httpx.Response(200, text="<html>a proxy's page</html>")
        return httpx.Response(503, text="upstream connect error")

    transport = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    async with transport, BotRestClient("http://bot-rest:8004", client=transport) as client:
        with pytest.raises(BotRestMalformed) as missing:
            await client.universe()
        with pytest.raises(BotRestMalformed) as not_json:
            await client.tickers()
        with pytest.raises(BotRestRefused) as refused:
            await client.klines("BTC_USDT", 0, 60)

    text = str(missing.value)
    assert "malformed UniverseOut" in text and "http://bot-rest:8004/universe" in text
    assert "symbols.0.base_coin: Field required" in text
    assert "malformed TickersOut" in str(not_json.value)
    assert refused.value.status == 503 and refused.value.body is None
    assert "upstream connect error" in str(refused.value)


async def test_no_answer_is_unavailable() -> None:
    async with BotRestClient(f"http://127.0.0.1:{free_port()}", timeout_s=2.0) as client:
        with pytest.raises(BotRestUnavailable, match="bot_rest unreachable at"):
            await client.universe()
