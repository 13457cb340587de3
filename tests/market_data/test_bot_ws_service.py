"""bot_ws as a real process against mexc_sim as a real process, with the harness's Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from redis import Redis

from cdb.core.events import Candle, Control, ControlSettings, MarketData
from tests.support import (
    REDIS_PASSWORD,
    SIM_CLOCK,
    RedisServer,
    ServiceProcess,
    SimProcess,
    eventually,
    scrape,
)

T = TypeVar("T")


def bot_ws(env: dict[str, str], sim: SimProcess, tmp_path: Path, **extra: str) -> ServiceProcess:
    return ServiceProcess(
        "cdb.bot_ws",
        {
            **env,
            "MEXC_WS_URL": f"ws://127.0.0.1:{sim.port}/edge",
            "MEXC_REST_URL": sim.url,
            "PING_INTERVAL_S": "2",
            "PUBLISH_INTERVAL_S": "0.5",
            **SIM_CLOCK,
            **extra,
        },
        tmp_path,
    )


def events(redis: Redis, stream: str, model: type[T]) -> list[T]:
    return [
        model.model_validate_json(fields[b"event"])  # type: ignore[attr-defined]
        for _, fields in redis.xrange(stream)
    ]


def test_450_symbols_at_chunk_200_make_three_connections_over_two_pods(
    redis_only_env: dict[str, str], sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(["--symbols", "450", "--speed", "30", "--max-subs", "200"])
    pods = [
        bot_ws(redis_only_env, sim, tmp_path, CHUNK_COUNT="2", POD_NAME=f"bot-ws-{i}")
        for i in range(2)
    ]
    with pods[0], pods[1]:
        for pod in pods:
            pod.wait_healthy(timeout=60)

        def three_connections() -> dict[str, Any] | None:
            status = sim.sim_status()
            connections = status["connections"]
            subscribed = sum(c["subscriptions"] for c in connections)
            # a socket counts once it has sent all its subscriptions
            return status if len(connections) == 3 and subscribed == 450 else None

        status = eventually(three_connections, what="three connections at the simulator")
        per_connection = sorted(c["subscriptions"] for c in status["connections"])
        assert per_connection == [50, 200, 200]
        assert status["subscriptions_refused"] == 0  # never over 200 on one socket
        chunks = [[c["symbols"] for c in pod.status()["chunks"]] for pod in pods]
        assert chunks == [[200, 50], [200]]  # chunk j goes to pod j % 2
        assert [scrape(pod.url, "bot_ws_connections") for pod in pods] == [2.0, 1.0]
        assert [scrape(pod.url, "bot_ws_symbols") for pod in pods] == [250.0, 200.0]


def test_candles_survive_malformed_frames_and_a_dropped_connection(
    redis_only_env: dict[str, str], sim_factory: Any, tmp_path: Path, redisdb: Redis
) -> None:
    sim = sim_factory(["--symbols", "6", "--speed", "60", "--scenario", "pump"])
    with bot_ws(redis_only_env, sim, tmp_path) as service:
        service.wait_healthy(timeout=60)
        eventually(lambda: redisdb.xlen("cdb:candles") > 6 * 16, what="the first candles")

        sim.fault(malformed_next=8)
        eventually(
            lambda: scrape(service.url, "bot_ws_malformed_frames_total") >= 8, what="malformed"
        )
        assert service.wait_healthy() == {"status": "ok"}  # counted, logged, not a crash

        backfilled = scrape(service.url, "bot_ws_backfilled_candles_total")
        httpx.post(f"{sim.url}/sim/drop", timeout=5).raise_for_status()
        eventually(lambda: scrape(service.url, "bot_ws_reconnects_total") >= 1, what="a reconnect")
        eventually(
            lambda: scrape(service.url, "bot_ws_backfilled_candles_total") > backfilled,
            what="the gap backfilled",
        )
        after_drop = redisdb.xlen("cdb:candles")
        eventually(lambda: redisdb.xlen("cdb:candles") > after_drop + 6 * 3, what="more candles")

        candles = events(redisdb, "cdb:candles", Candle)
        by_symbol: dict[str, list[Candle]] = {}
        for candle in candles:
            by_symbol.setdefault(candle.symbol, []).append(candle)
        assert len(by_symbol) == 6
        for symbol, series in by_symbol.items():
            times = [c.open_time for c in series]
            assert times == list(range(times[0], times[-1] + 60, 60)), f"{symbol}: gap or repeat"
            reply = httpx.get(
                f"{sim.url}/api/v1/contract/kline/{symbol}",
                params={"start": times[0], "end": times[-1]},
                timeout=5,
            ).json()["data"]
            truth = {
                t: (o, h, low, c, v)
                for t, o, h, low, c, v in zip(
                    reply["time"],
                    reply["realOpen"],
                    reply["realHigh"],
                    reply["realLow"],
                    reply["realClose"],
                    reply["vol"],
                    strict=True,
                )
            }
            for c in series:
                assert (c.open, c.high, c.low, c.close, c.volume) == truth[c.open_time], (
                    f"{symbol} {c.open_time} (bot_ws refused {service.status()['deals_ignored']}"
                    " deals as late or before its subscriptions)"
                )

        movers = events(redisdb, "cdb:market_data", MarketData)
        assert movers
        by_time: dict[int, list[MarketData]] = {}
        for event in movers:
            assert event.type == "market_data" and event.interval == "15m"
            by_time.setdefault(event.timestamp, []).append(event)
        for batch in by_time.values():
            assert sum(e.pct_change > 0 for e in batch) <= 5
            assert sum(e.pct_change < 0 for e in batch) <= 5
        raw = json.loads(redisdb.xrange("cdb:market_data", count=1)[0][1][b"event"])
        assert set(raw) == {
            "event_id",
            "schema_version",
            "type",
            "symbol",
            "price",
            "volume",
            "pct_change",
            "timestamp",
            "interval",
        }


def test_a_future_dated_frame_is_refused_and_candles_go_on(
    redis_only_env: dict[str, str], sim_factory: Any, tmp_path: Path, redisdb: Redis
) -> None:
    """One deal frame stamped three days ahead (mexc_sim's fault API) must not move the
    screener's clock: no future candle, the real deals keep being applied, /health ok."""
    sim = sim_factory(["--symbols", "4", "--speed", "60"])
    with bot_ws(redis_only_env, sim, tmp_path) as service:
        service.wait_healthy(timeout=60)
        eventually(lambda: redisdb.xlen("cdb:candles") > 4 * 16, what="the first candles")
        sim.fault(future_frames_next=1)
        eventually(
            lambda: scrape(service.url, "bot_ws_frame_time_jumps_total") >= 1,
            what="the future frame refused",
        )
        assert sim.sim_status()["future_frames_sent"] == 1
        sim_now = sim.sim_status()["sim_time_ms"] // 1000
        before = redisdb.xlen("cdb:candles")
        eventually(lambda: redisdb.xlen("cdb:candles") > before + 4 * 3, what="more candles")
        assert service.wait_healthy(timeout=10) == {"status": "ok"}
        candles = events(redisdb, "cdb:candles", Candle)
        newest = max(c.open_time for c in candles)
        assert newest < sim_now + 600, f"a candle from the future: {newest} vs {sim_now}"
        flat_after = [c for c in candles[before:] if c.volume == 0]
        assert len(flat_after) < len(candles[before:]), "only flat candles after the fault"
        assert scrape(service.url, "bot_ws_frame_time_jumps_total") == 1
        applied = scrape(service.url, "bot_ws_ticks_total")
        eventually(
            lambda: scrape(service.url, "bot_ws_ticks_total") > applied, what="deals applied"
        )
        assert service.status()["time_jump_examples"]


def test_stale_when_pushes_stop_ok_when_they_resume_and_live_lookback(
    redis_only_env: dict[str, str], sim_factory: Any, tmp_path: Path, redisdb: Redis
) -> None:
    sim = sim_factory(["--symbols", "4", "--speed", "60"])
    with bot_ws(
        redis_only_env, sim, tmp_path, STALE_AFTER_S="3", BOT_NAME="mexc-momentum"
    ) as service:
        service.wait_healthy(timeout=60)
        sim.fault(paused=True)
        stale = eventually(
            lambda: (
                (r := httpx.get(f"{service.url}/health", timeout=2)).status_code == 503 and r.json()
            ),
            what="stale",
        )
        assert stale["status"] == "stale"
        assert scrape(service.url, "bot_ws_status") == 0.0
        sim.fault(paused=False)
        assert service.wait_healthy(timeout=60) == {"status": "ok"}

        # Another TradingBot's control first (the stream is shared): not this screener's.
        for bot, lookback in (("another-bot", 7), ("mexc-momentum", 5)):
            control = Control(
                bot=bot,
                generation=2,
                config_hash="h2",
                settings=ControlSettings(lookback_min=lookback),
                timestamp=time.time(),
            )
            redisdb.xadd("cdb:control", {"event": control.model_dump_json()})
        eventually(lambda: service.status()["lookback_min"] == 5, what="lookback applied")
        log_text = service.log_path.read_text()
        changes = [line for line in log_text.splitlines() if "lookback changed" in line]
        assert [json.loads(line)["to"] for line in changes] == [5], changes
        eventually(
            lambda: any(e.interval == "5m" for e in events(redisdb, "cdb:market_data", MarketData)),
            what="market_data with the new window",
        )
        assert service.terminate() == 0  # SIGTERM: sockets closed, queued candles published
    # A restart keeps what the operator set (merged again from the control stream by the
    # kernel's StreamControl), not the environment's LOOKBACK_MIN.
    with bot_ws(redis_only_env, sim, tmp_path, BOT_NAME="mexc-momentum") as again:
        again.wait_healthy(timeout=60)
        assert again.status()["lookback_min"] == 5


def test_universe_and_backfill_through_bot_rest(
    redis_only_env: dict[str, str], sim_factory: Any, tmp_path: Path, redisdb: Redis
) -> None:
    sim = sim_factory(["--symbols", "5", "--speed", "60"])
    rest = ServiceProcess("cdb.bot_rest", {**redis_only_env, "MEXC_REST_URL": sim.url}, tmp_path)
    with rest:
        rest.wait_healthy(timeout=30)
        service = bot_ws(redis_only_env, sim, tmp_path, BOT_REST_URL=rest.url)
        with service:
            service.wait_healthy(timeout=60)
            assert service.status()["universe"] == 5
            eventually(lambda: redisdb.xlen("cdb:candles") > 5 * 20, what="candles")
            series: dict[str, list[int]] = {}
            for candle in events(redisdb, "cdb:candles", Candle):
                series.setdefault(candle.symbol, []).append(candle.open_time)
            assert len(series) == 5
            for times in series.values():
                assert times == list(range(times[0], times[-1] + 60, 60))
            assert scrape(rest.url, "bot_rest_requests_total") >= 5 + 1  # klines + universe
            assert scrape(service.url, "bot_ws_backfilled_candles_total") >= 5 * 15


@pytest.mark.slow
def test_a_redis_outage_longer_than_the_publish_timeout_costs_no_candle(
    sim_factory: Any, tmp_path: Path
) -> None:
    """Redis SIGKILLed for 12 s (past the bus's publish timeout, set to 5 s here) and
    restarted from its AOF: bot_ws keeps running, holds the closed candles, and publishes
    every minute."""
    server = RedisServer(tmp_path / "redis", REDIS_PASSWORD).start()
    redis = Redis(port=server.port, password=REDIS_PASSWORD)
    sim = sim_factory(["--symbols", "4", "--speed", "30", "--seed", "5"])
    try:
        with bot_ws(
            server.env(), sim, tmp_path, STALE_AFTER_S="3600", BUS_PUBLISH_TIMEOUT_S="5"
        ) as service:
            service.wait_healthy(timeout=60)
            eventually(lambda: redis.xlen("cdb:candles") > 4 * 17, what="the first candles")
            server.kill()
            time.sleep(12)
            assert service.proc is not None and service.proc.poll() is None, service.log()
            server.start()
            redis = Redis(port=server.port, password=REDIS_PASSWORD)
            eventually(lambda: redis.xlen("cdb:candles") > 4 * (17 + 6), what="the held candles")
            # publishes outlived the bus's timeout and were kept, not a crash
            assert "redis unavailable" in service.log_path.read_text()
            # An XADD whose reply died with Redis is sent again: a copy with the same
            # event id, which consumers skip. Distinct candles: every minute, once.
            seen: dict[str, Candle] = {}
            for candle in events(redis, "cdb:candles", Candle):
                assert seen.setdefault(candle.event_id, candle) == candle
            by_symbol: dict[str, list[int]] = {}
            for candle in seen.values():
                by_symbol.setdefault(candle.symbol, []).append(candle.open_time)
            assert len(by_symbol) == 4
            for symbol, times in by_symbol.items():
                assert times == list(range(times[0], times[-1] + 60, 60)), f"{symbol}: gap"
    finally:
        server.stop()
