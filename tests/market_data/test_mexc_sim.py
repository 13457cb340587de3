"""mexc_sim speaks MEXC's contract protocol: over a real socket on 127.0.0.1, in-process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from cdb.bot_ws.frames import (
    Ack,
    DealPush,
    ErrorReply,
    KlinePush,
    MalformedFrame,
    Pong,
    TickerPush,
    TickersPush,
    parse_frame,
)
from cdb.mexc_sim import simulator as simulator_module
from cdb.mexc_sim.app import RunningSimulator, running_simulator
from cdb.mexc_sim.config import Faults, RestLimits, SimConfig, parse_args
from cdb.mexc_sim.simulator import Simulator
from tests.support import ROOT, eventually_async, free_port

START = 1_767_225_600  # 2026-01-01 00:00 UTC, a minute boundary


def config(**changes: Any) -> SimConfig:
    base: dict[str, Any] = {"port": 0, "symbols": 12, "seed": 7, "speed": 60, "start_time": START}
    return SimConfig(**{**base, **changes})


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(config()) as running:
        yield running


async def recv_until(ws: Any, kind: type, limit: int = 400) -> Any:
    for _ in range(limit):
        frame = parse_frame(await asyncio.wait_for(ws.recv(), timeout=10))
        if isinstance(frame, kind):
            return frame
    raise AssertionError(f"no {kind.__name__} in {limit} frames")


async def test_ping_sub_acks_and_every_push_kind(sim: RunningSimulator) -> None:
    async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
        await ws.send('{"method":"ping"}')
        raw = json.loads(await ws.recv())
        assert raw["channel"] == "pong" and isinstance(raw["data"], int) and "ts" in raw
        requests = [
            {"method": "sub.deal", "param": {"symbol": "BTC_USDT"}},
            {"method": "sub.kline", "param": {"symbol": "ETH_USDT", "interval": "Min1"}},
            {"method": "sub.ticker", "param": {"symbol": "SOL_USDT"}},
            {"method": "sub.tickers", "param": {}},
        ]
        for request in requests:
            await ws.send(json.dumps(request))
            reply = json.loads(await ws.recv())
            assert reply["channel"] == f"rs.{request['method']}"
            assert reply["data"] == "success" and "symbol" not in reply  # acks name no symbol
        deal = await recv_until(ws, DealPush)
        assert deal.symbol == "BTC_USDT" and deal.deals
        assert all(isinstance(d.i, str) for d in deal.deals)  # the wire's string trade ids
        kline = await recv_until(ws, KlinePush)
        assert kline.kline.interval == "Min1" and kline.kline.t % 60 == 0
        assert kline.kline.ro is not None and kline.kline.a > 0
        ticker = await recv_until(ws, TickerPush)
        assert ticker.symbol == "SOL_USDT" and ticker.ticker.bid1 is not None
        tickers = await recv_until(ws, TickersPush)
        assert len(tickers.rows) == 12 and tickers.rows[0].bid1 is None  # rows carry no bid1


async def test_errors_silence_and_unsubscribe(sim: RunningSimulator) -> None:
    async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
        await ws.send('{"method":"sub.deal","param":{"symbol":"NOPE_USDT"}}')
        error = parse_frame(await ws.recv())
        assert isinstance(error, ErrorReply) and error.message == "Contract [NOPE_USDT] not exists"
        await ws.send("{not json")
        assert isinstance(parse_frame(await ws.recv()), ErrorReply)
        await ws.send('{"method":"sub.kline","param":{"symbol":"BTC_USDT","interval":"Hour1"}}')
        assert isinstance(parse_frame(await ws.recv()), ErrorReply)  # no Hour1 at MEXC
        await ws.send('{"method":"sub.nope","param":{}}')  # unknown method: no reply at all
        await ws.send('{"method":"ping"}')
        assert isinstance(parse_frame(await ws.recv()), Pong)
        await ws.send('{"method":"sub.deal","param":{"symbol":"BTC_USDT"}}')
        await ws.send('{"method":"unsub.deal","param":{"symbol":"BTC_USDT"}}')
        acks = [await recv_until(ws, Ack), await recv_until(ws, Ack)]
        assert [a.method for a in acks] == ["sub.deal", "unsub.deal"]
    assert sim.sim.stats["connections_total"] == 1


async def test_subscription_cap_and_ping_timeout() -> None:
    faults = Faults(max_subs_per_connection=2, ping_timeout_s=0.5)
    async with running_simulator(config(faults=faults)) as sim:
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            for symbol in ("BTC_USDT", "ETH_USDT", "SOL_USDT"):
                await ws.send(json.dumps({"method": "sub.deal", "param": {"symbol": symbol}}))
            replies = [parse_frame(await ws.recv()) for _ in range(3)]
            assert [type(r) for r in replies] == [Ack, Ack, ErrorReply]
            # no ping sent: MEXC's rule closes the socket, after an rs.error that says why
            texts = []
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    texts.append(await asyncio.wait_for(ws.recv(), timeout=10))
            assert any("no response, close the channel" in t for t in texts if isinstance(t, str))
        assert sim.sim.stats["ping_timeouts"] == 1


async def test_faults_pause_drop_and_malformed(sim: RunningSimulator) -> None:
    async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
        await ws.send('{"method":"sub.deal","param":{"symbol":"BTC_USDT"}}')
        await recv_until(ws, DealPush)
        sim.sim.set_faults(malformed_next=4)
        bad = 0
        for _ in range(200):
            try:
                parse_frame(await asyncio.wait_for(ws.recv(), timeout=10))
            except MalformedFrame:
                bad += 1
                if bad == 4:
                    break
        assert bad == 4  # truncated, garbage, wrong types, binary
        async with httpx.AsyncClient() as client:
            reply = await client.post(f"{sim.rest_url}/sim/drop")
        assert reply.json() == {"dropped": 1}
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(1000):
                await asyncio.wait_for(ws.recv(), timeout=10)
    async with httpx.AsyncClient() as client:
        bad_fault = await client.post(f"{sim.rest_url}/sim/faults", json={"malformed_rate": 2})
        assert bad_fault.status_code == 422
        paused = await client.post(f"{sim.rest_url}/sim/faults", json={"paused": True})
        assert paused.json()["paused"] is True
    async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
        await ws.send('{"method":"sub.deal","param":{"symbol":"BTC_USDT"}}')
        assert isinstance(parse_frame(await ws.recv()), Ack)
        pushed = sim.sim.stats["frames_pushed"]
        await asyncio.sleep(0.5)  # five push rounds at the default interval
        assert sim.sim.stats["frames_pushed"] == pushed  # nothing pushed while paused


async def test_a_frame_time_never_runs_ahead_of_a_deal_still_to_come() -> None:
    """At 600x a 0.1 s push round spans a minute boundary: every deal of a minute, for
    every symbol, comes before any frame stamped in the next minute (a client closing
    minutes by the frames' time would close them short otherwise)."""
    # unbounded client queue: the frames left unread at the end must not hold back the close
    # handshake (a full queue stops the client reading, so it never sees the close frame)
    async with (
        running_simulator(config(speed=600)) as running,
        websockets.connect(running.ws_url, ping_interval=None, max_queue=None) as ws,
    ):
        symbols = running.sim.market.order
        for symbol in symbols:
            await ws.send(json.dumps({"method": "sub.deal", "param": {"symbol": symbol}}))
        clock = 0
        crossings: set[int] = set()
        received = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline or len(crossings) < 3:
            frame = parse_frame(await asyncio.wait_for(ws.recv(), timeout=10))
            if not isinstance(frame, DealPush):
                continue
            for deal in frame.deals:
                assert deal.t <= frame.ts, "a frame stamped before its own deal"
                assert deal.t // 60_000 >= clock // 60_000, (
                    f"{frame.symbol}: a deal at {deal.t} after a frame stamped {clock}"
                )
                received += 1
            if frame.ts // 60_000 > clock // 60_000 and clock:
                crossings.add(frame.ts // 60_000)
            clock = max(clock, frame.ts)
    # each 0.1 s round spans 60 sim seconds at 600x: every minute boundary fell inside one
    assert received > 100 and len(crossings) >= 3


async def test_rest_envelope_layouts_and_errors(sim: RunningSimulator) -> None:
    base = f"{sim.rest_url}/api/v1/contract"
    async with httpx.AsyncClient() as client:
        ping = (await client.get(f"{base}/ping")).json()
        assert ping["success"] is True and ping["code"] == 0 and isinstance(ping["data"], int)
        rows = (await client.get(f"{base}/detail")).json()["data"]
        assert len(rows) == 12
        for field in ("apiAllowed", "contractSize", "priceUnit", "volUnit", "minVol", "state"):
            assert field in rows[0]
        assert {r["quoteCoin"] for r in rows} == {"USDT"} == {r["settleCoin"] for r in rows}
        one = (await client.get(f"{base}/detail", params={"symbol": "btc_usdt"})).json()["data"]
        assert isinstance(one, dict) and one["symbol"] == "BTC_USDT"
        missing = (await client.get(f"{base}/detail", params={"symbol": "NOPE_USDT"})).json()
        assert missing == {"success": False, "code": 1001, "message": "Contract does not exist"}
        tickers = (await client.get(f"{base}/ticker")).json()["data"]
        assert len(tickers) == 12 and "riseFallRate" in tickers[0]
        now_s = ping["data"] // 1000
        kline = (
            await client.get(f"{base}/kline/BTC_USDT", params={"start": now_s - 600, "end": now_s})
        ).json()["data"]
        assert set(kline) >= {"time", "open", "close", "high", "low", "vol", "amount", "realOpen"}
        assert len({len(column) for column in kline.values()}) == 1
        assert kline["time"] == sorted(kline["time"]) and all(t % 60 == 0 for t in kline["time"])
        assert all(o == c for o, c in zip(kline["open"][1:], kline["close"], strict=False))
        latest = (await client.get(f"{base}/kline/BTC_USDT")).json()["data"]
        assert len(latest["time"]) <= 2000
        bad = (await client.get(f"{base}/kline/BTC_USDT", params={"start": "x"})).json()
        assert bad["success"] is False and bad["code"] == 600
        deals = (await client.get(f"{base}/deals/BTC_USDT", params={"limit": 5})).json()["data"]
        assert len(deals) == 5 and set(deals[0]) == {"p", "v", "T", "O", "M", "t"}


async def test_rest_throttles_with_mexc_code_510() -> None:
    async with (
        running_simulator(config(limits=RestLimits(ping=3))) as sim,
        httpx.AsyncClient() as client,
    ):
        codes = [
            (await client.get(f"{sim.rest_url}/api/v1/contract/ping")).json()["code"]
            for _ in range(5)
        ]
    assert codes[:3] == [0, 0, 0] and codes[3:] == [510, 510]


def test_same_seed_same_market_and_deals_agree_with_klines() -> None:
    first, second = Simulator(config()), Simulator(config())
    until = first.market.start_ms + 150_000
    deals_a = first.market.advance_to(until)
    deals_b = second.market.advance_to(until)
    assert deals_a == deals_b and deals_a
    other = Simulator(config(seed=8))
    assert other.market.advance_to(until) != deals_a
    bars = first.market.bars_between("BTC_USDT", START, START + 60)
    assert [bar.t for bar in bars] == [START, START + 60]  # both minutes, so the loop checks
    for bar in bars:
        mine = [d for d in deals_a["BTC_USDT"] if d.t // 60_000 * 60 == bar.t]
        assert bar.o == mine[0].p and bar.c == mine[-1].p
        assert bar.vol == sum(d.v for d in mine)


def test_pump_scenario_moves_a_symbol_within_a_minute() -> None:
    sim = Simulator(config(scenario="pump", symbols=40))
    start = sim.market.start_ms
    before = {s: st.mid for s, st in sim.market.states.items()}
    sim.market.advance_to(start + 60_000)
    moves = [sim.market.states[s].mid / before[s] - 1 for s in before]
    assert max(moves) > 0.03  # the first pump episode starts at once


def test_cli_flags() -> None:
    cfg = parse_args(
        ["--symbols", "1000", "--speed", "60", "--scenario", "pump", "--max-subs", "200"]
    )
    assert (cfg.symbols, cfg.speed, cfg.scenario) == (1000, 60.0, "pump")
    assert cfg.faults.max_subs_per_connection == 200
    with pytest.raises(SystemExit):
        parse_args(["--speed", "-1"])


async def test_a_long_pause_loses_the_feed_and_resume_closes_the_sockets(
    sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator_module, "MAX_PENDING_DEALS", 10)
    async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
        await ws.send('{"method":"sub.deal","param":{"symbol":"BTC_USDT"}}')
        await recv_until(ws, DealPush)
        sim.sim.set_faults(paused=True)
        for _ in range(200):
            if sim.sim._feed_lost:
                break
            await asyncio.sleep(0.05)
        assert sim.sim._feed_lost and sim.sim.market.pending_deals <= 10  # memory stays bounded
        sim.sim.set_faults(paused=False)
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(1000):
                await asyncio.wait_for(ws.recv(), timeout=10)
    assert sim.sim.stats["drops"] == 1


async def test_the_process_drains_and_exits_0_on_sigterm() -> None:
    """A started mexc_sim with a subscribed client: SIGTERM closes the socket, exit 0."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdb.mexc_sim", "--port", str(port), "--symbols", "5"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"mexc_sim exited {proc.poll()}")
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200

        await eventually_async(healthy, "mexc_sim answering /health", timeout=30)
        async with websockets.connect(f"ws://127.0.0.1:{port}/edge", ping_interval=None) as ws:
            await ws.send('{"method":"sub.deal","param":{"symbol":"BTC_USDT"}}')
            await recv_until(ws, DealPush)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed):
                for _ in range(10_000):
                    await asyncio.wait_for(ws.recv(), timeout=20)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
