"""bot_rest as a real process in front of mexc_sim as a real process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support import ServiceProcess, SimProcess, scrape


def bot_rest(env: dict[str, str], sim: SimProcess, tmp_path: Path, **extra: str) -> ServiceProcess:
    return ServiceProcess("cdb.bot_rest", {**env, "MEXC_REST_URL": sim.url, **extra}, tmp_path)


def test_universe_tickers_and_paged_klines_with_cache(
    redis_only_env: dict[str, str], sim_factory: Callable[[list[str]], SimProcess], tmp_path: Path
) -> None:
    sim = sim_factory(["--symbols", "5", "--history-min", "2100", "--speed", "1"])
    with bot_rest(redis_only_env, sim, tmp_path) as service:
        service.wait_healthy(timeout=30)
        universe = httpx.get(f"{service.url}/universe", timeout=10).json()
        assert universe["count"] == 5
        symbols = [row["symbol"] for row in universe["symbols"]]
        assert symbols == sorted(symbols) and "BTC_USDT" in symbols
        btc = next(r for r in universe["symbols"] if r["symbol"] == "BTC_USDT")
        assert (btc["contract_size"], btc["price_unit"], btc["price_scale"]) == (0.0001, 0.1, 1)
        requests_before = sim.sim_status()["rest_requests"]
        again = httpx.get(f"{service.url}/universe", timeout=10).json()
        assert again == universe
        assert sim.sim_status()["rest_requests"] == requests_before  # served from cache
        assert scrape(service.url, "bot_rest_cache_hits_total") == 1.0

        tickers = httpx.get(f"{service.url}/tickers", timeout=10).json()
        assert tickers["count"] == 5 and tickers["tickers"][0]["last_price"] > 0
        one = httpx.get(f"{service.url}/tickers", params={"symbol": "eth_usdt"}, timeout=10)
        assert one.json()["tickers"][0]["symbol"] == "ETH_USDT"

        now_s = httpx.get(f"{sim.url}/api/v1/contract/ping", timeout=5).json()["data"] // 1000
        end = now_s // 60 * 60 - 60
        start = end - 2050 * 60  # more than one MEXC page of 2000 bars
        klines = httpx.get(
            f"{service.url}/klines/BTC_USDT", params={"start": start, "end": end}, timeout=30
        ).json()
        times = [bar["time"] for bar in klines["bars"]]
        assert times == list(range(start, end + 60, 60))
        direct = httpx.get(
            f"{sim.url}/api/v1/contract/kline/BTC_USDT",
            params={"start": end - 120, "end": end},
            timeout=5,
        ).json()["data"]
        assert [b["realOpen"] for b in klines["bars"][-3:]] == direct["realOpen"]


def test_errors_are_clear_and_mexc_limits_are_respected(
    redis_only_env: dict[str, str], sim_factory: Callable[[list[str]], SimProcess], tmp_path: Path
) -> None:
    sim = sim_factory(["--symbols", "30", "--speed", "1"])
    with bot_rest(redis_only_env, sim, tmp_path, REST_TIMEOUT_S="0.5") as service:
        service.wait_healthy(timeout=30)
        now_s = httpx.get(f"{sim.url}/api/v1/contract/ping", timeout=5).json()["data"] // 1000

        unknown = httpx.get(f"{service.url}/klines/NOPE_USDT", params={"start": now_s - 600})
        assert unknown.status_code == 502
        assert unknown.json() == {
            "error": "mexc_error",
            "code": 1001,
            "message": "Contract does not exist",
        }
        assert httpx.get(f"{service.url}/klines/btcusdt", params={"start": 1}).status_code == 400
        reversed_range = httpx.get(
            f"{service.url}/klines/BTC_USDT", params={"start": now_s, "end": now_s - 60}
        )
        assert reversed_range.status_code == 400

        # 30 different requests at once: bot_rest queues them under MEXC's 20 per 2 s
        universe = httpx.get(f"{service.url}/universe", timeout=10).json()["symbols"]

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                replies = await asyncio.gather(
                    *(
                        client.get(
                            f"{service.url}/klines/{row['symbol']}",
                            params={"start": now_s - 600, "end": now_s},
                        )
                        for row in universe
                    )
                )
            return [r.status_code for r in replies]

        assert asyncio.run(burst()) == [200] * 30
        assert sim.sim_status()["rest_throttled"] == 0

        sim.fault(rest_throttle_all=True)
        throttled = httpx.get(f"{service.url}/tickers", timeout=10)
        assert throttled.status_code == 502
        assert throttled.json()["code"] == 510
        sim.fault(rest_throttle_all=False, rest_delay_ms=1500)
        slow = httpx.get(f"{service.url}/klines/BTC_USDT", params={"start": now_s - 60}, timeout=10)
        assert slow.status_code == 504 and slow.json()["error"] == "mexc_timeout"
        sim.fault(rest_delay_ms=0)
        text = httpx.get(f"{service.url}/metrics", timeout=5).text
        assert 'bot_rest_upstream_errors_total{code="510"} 1.0' in text
        assert 'bot_rest_upstream_errors_total{code="timeout"} 1.0' in text
        assert 'bot_rest_requests_total{endpoint="klines",outcome="ok"} 30.0' in text
