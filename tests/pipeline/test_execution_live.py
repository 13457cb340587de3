"""execution_service in live mode against mexc_sim's public REST and private order API on a
real port: signed orders with ``externalOid`` = ``order_id``, reconciliation of pending
orders on start, refusals, and the three-part switch that guards live trading."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis

from cdb.core.bus import Bus
from cdb.core.events import Control, ControlSettings, Order, Stream
from cdb.execution_service.live import MexcVenue
from cdb.execution_service.mexc_client import MexcPrivateClient, sign
from cdb.execution_service.venue import VenueOutcome
from cdb.mexc_sim.config import SimConfig
from cdb.mexc_sim.private_api import PrivateExchange, private_router
from cdb.mexc_sim.rest import rest_router
from cdb.mexc_sim.simulator import Simulator
from cdb.risk_manager.rules import order_id_for
from tests.support import (
    FAST_BUS,
    REDIS_PASSWORD,
    ROOT,
    SIM_CLOCK,
    Pipeline,
    ServiceProcess,
    eventually_async,
    free_port,
    group_caught_up,
    publish_approved,
    query,
    scalar,
)
from tests.support.asgi import serve

KEY, SECRET = "mx0-live-test-key", "live-test-secret-do-not-log"


class Venue:
    def __init__(self, sim: Simulator, exchange: PrivateExchange, url: str) -> None:
        self.sim, self.exchange, self.url = sim, exchange, url
        self.symbol = next(iter(sim.market.states))
        self.contract_size = sim.market.states[self.symbol].contract.contract_size


@pytest.fixture
async def venue() -> AsyncIterator[Venue]:
    sim = Simulator(SimConfig(symbols=3, seed=4))
    exchange = PrivateExchange(
        contract_size_of=lambda s: sim.market.states[s].contract.contract_size
    )
    app = FastAPI()
    app.include_router(rest_router(sim))
    app.include_router(private_router(sim.price_of, {KEY: SECRET}, exchange=exchange))
    async with serve(app) as url:
        yield Venue(sim, exchange, url)


def live_env(service_env: dict[str, str], url: str, secret: str = SECRET) -> dict[str, str]:
    return {
        **service_env,
        **FAST_BUS,
        "TRADING_MODE": "live",
        "LIVE_TRADING_CONFIRM": "yes",
        "MEXC_API_KEY": KEY,
        "MEXC_API_SECRET": secret,
        "MEXC_REST_URL": url,
        "CONSUMER_NAME": "execution-live",
    }


def an_order(venue: Venue, n: int = 1, contracts: int = 10) -> Order:
    oid = order_id_for(f"sig-live-{n}")
    price = venue.sim.price_of(venue.symbol) or 1.0
    quantity = contracts * venue.contract_size
    return Order(
        event_id=oid,
        order_id=oid,
        signal_id=f"sig-live-{n}",
        symbol=venue.symbol,
        side="long",
        quantity=quantity,
        notional=quantity * price,
        price=price,
        stop_loss=price * 0.98,
        mode="live",
        timestamp=time.time(),
    )


async def start(proc: ServiceProcess) -> ServiceProcess:
    proc.start()
    await asyncio.to_thread(proc.wait_healthy, 60, ("ok", "stale"))
    return proc


async def results(redis: Redis) -> list[dict[str, Any]]:
    return [json.loads(f[b"event"]) for _, f in await redis.xrange(Stream.ORDER_RESULTS.value)]


async def test_a_live_order_is_signed_sent_once_and_booked(
    venue: Venue, bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    proc = await start(
        ServiceProcess("cdb.execution_service", live_env(service_env, venue.url), tmp_path)
    )
    try:
        order = an_order(venue)
        await publish_approved(bus, service_env, order)
        await eventually_async(
            lambda: scalar(service_env, "SELECT status FROM orders") == "filled", what="fill"
        )
        [sent] = venue.exchange.orders.values()
        assert sent.external_oid == order.order_id and len(order.order_id) <= 32
        assert sent.vol == 10 and sent.stop_loss_price == pytest.approx(order.stop_loss)
        row = query(service_env, "SELECT external_id, mode FROM orders")[0]
        assert row == (order.order_id, "live")
        fill = query(service_env, "SELECT price, quantity, fee FROM fills")[0]
        assert fill[1] == pytest.approx(10 * venue.contract_size)
        assert fill[2] == pytest.approx(sent.taker_fee)

        # The same order again (a replayed signal): no second order at MEXC.
        await publish_approved(
            bus, service_env, order.model_copy(update={"event_id": "replayed-copy"})
        )
        redis = bus.redis

        async def handled() -> bool:
            return await group_caught_up(redis, Stream.ORDERS.value, "execution_service")

        await eventually_async(handled, what="the replayed order handled")
        assert len(venue.exchange.orders) == 1 and venue.exchange.submits == 1
        filled = [r for r in await results(redis) if r["status"] == "filled"]
        assert {r["order_id"] for r in filled} == {order.order_id}
        assert filled[0]["mode"] == "live"

        status = json.dumps(proc.status())
        assert SECRET not in status and KEY not in status
    finally:
        proc.__exit__()
    assert SECRET not in proc.log() and KEY not in proc.log()


def insert_pending(env: dict[str, str], order: Order, submit_attempts: int = 0) -> None:
    """An order's committed intent, as a crash left it (``submit_attempts`` POSTs begun)."""
    query(
        env,
        "INSERT INTO orders (order_id, signal_id, symbol, side, quantity, notional, price,"
        " stop_loss, mode, status, external_id, submit_attempts) VALUES (%s, %s, %s, 'long',"
        " %s, %s, %s, %s, 'live', 'pending', %s, %s) RETURNING order_id",
        (
            order.order_id,
            order.signal_id,
            order.symbol,
            order.quantity,
            order.notional,
            order.price,
            order.stop_loss,
            order.order_id,
            submit_attempts,
        ),
    )


def body_of(order: Order, vol: int = 10) -> dict[str, Any]:
    return {
        "symbol": order.symbol,
        "price": order.price,
        "vol": vol,
        "leverage": 1,
        "side": 1,
        "type": 5,
        "openType": 1,
        "externalOid": order.order_id,
    }


async def test_pending_orders_are_driven_on_start_sent_once_or_unknown_until_proven(
    venue: Venue, bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = live_env(service_env, venue.url)
    proc = await start(ServiceProcess("cdb.execution_service", env, tmp_path))
    proc.terminate()  # schema in place; now play the crashes
    never_sent = an_order(venue, 1)  # killed between the intent's commit and the POST
    reply_lost = an_order(venue, 2)  # MEXC booked it; the reply died with the process
    lost = an_order(venue, 3)  # a POST was begun, MEXC has no trace of it
    given_up = an_order(venue, 4)  # sent the most times allowed, never found
    insert_pending(service_env, never_sent, 0)
    insert_pending(service_env, reply_lost, 1)
    insert_pending(service_env, lost, 1)
    insert_pending(service_env, given_up, 3)
    venue.exchange.submit(KEY, body_of(reply_lost), venue.sim.price_of)
    submits = venue.exchange.submits

    proc = await start(ServiceProcess("cdb.execution_service", env, tmp_path))
    try:
        # driven by housekeeping's first round, beside the consumers (no event needed)
        expected = {
            never_sent.order_id: "filled",
            reply_lost.order_id: "filled",
            lost.order_id: "filled",
            given_up.order_id: "unknown",
        }
        await eventually_async(
            lambda: dict(query(service_env, "SELECT order_id, status FROM orders")) == expected,
            what="every pending order driven after the restart",
        )
        # sent: the never-sent one and the lost one, once each; the booked one only looked up
        assert venue.exchange.submits == submits + 2 and len(venue.exchange.orders) == 3
        attempts = dict(query(service_env, "SELECT order_id, submit_attempts FROM orders"))
        assert attempts == {
            never_sent.order_id: 1,
            reply_lost.order_id: 1,
            lost.order_id: 2,
            given_up.order_id: 3,
        }
        assert scalar(service_env, "SELECT count(*) FROM positions") == 3
        kinds = {(r["order_id"], r["status"]) for r in await results(bus.redis)}
        assert kinds == {
            (never_sent.order_id, "filled"),
            (reply_lost.order_id, "filled"),
            (lost.order_id, "filled"),
            (given_up.order_id, "unknown"),
        }

        # Proven later: MEXC does have it after all. Housekeeping finds it and books it.
        venue.exchange.submit(KEY, body_of(given_up), venue.sim.price_of)
        await eventually_async(
            lambda: (
                scalar(
                    service_env,
                    "SELECT status FROM orders WHERE order_id = %s",
                    (given_up.order_id,),
                )
                == "filled"
            ),
            what="unknown order proven filled",
        )
        assert scalar(service_env, "SELECT count(*) FROM positions") == 4
        assert len(venue.exchange.orders) == 4  # nothing was booked twice
    finally:
        proc.__exit__()


async def test_a_paused_live_service_sends_nothing(
    venue: Venue, bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    proc = await start(
        ServiceProcess("cdb.execution_service", live_env(service_env, venue.url), tmp_path)
    )
    try:
        await bus.publish(
            Control(
                bot="live",
                generation=1,
                config_hash="paused",
                settings=ControlSettings(paused=True),
                timestamp=time.time(),
            )
        )
        await eventually_async(lambda: proc.status()["in_force"]["paused"] is True, what="paused")
        order = an_order(venue)
        await publish_approved(bus, service_env, order)
        await eventually_async(
            lambda: scalar(service_env, "SELECT status FROM orders") == "rejected", what="refusal"
        )
        assert scalar(service_env, "SELECT reason FROM orders") == "trading is paused"
        assert venue.exchange.submits == 0 and venue.exchange.orders == {}

        async def published() -> bool:
            return [r["status"] for r in await results(bus.redis)] == ["rejected"]

        await eventually_async(published, what="the rejection published")
    finally:
        proc.__exit__()
    assert SECRET not in proc.log()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 17])
async def test_sigkill_while_live_orders_are_in_flight_books_each_once(
    seed: int, venue: Venue, bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    """MEXC books each order at once but answers 250 ms later; execution_service is
    SIGKILLed at random points (some inside that window) and restarted. Every order is at
    MEXC once and booked once: one fill, one position, one ``filled`` result."""
    venue.exchange.reply_delay_ms = 250
    env = live_env(service_env, venue.url)
    proc = await start(ServiceProcess("cdb.execution_service", env, tmp_path))
    orders = [an_order(venue, 100 + n) for n in range(12)]
    rng = random.Random(seed)
    progress: list[int] = []
    try:
        for order in orders:
            await publish_approved(bus, service_env, order)
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            proc.kill()
            progress.append(len(venue.exchange.orders))
            proc = await start(ServiceProcess("cdb.execution_service", env, tmp_path))
        await eventually_async(
            lambda: (
                scalar(service_env, "SELECT count(*) FROM orders WHERE status = 'filled'") == 12
            ),
            what="every live order filled",
        )
        assert any(0 < booked < len(orders) for booked in progress), progress  # mid-stream
        booked = [o.external_oid for o in venue.exchange.orders.values()]
        assert sorted(booked) == sorted(o.order_id for o in orders)  # each once at MEXC
        fills = query(service_env, "SELECT order_id, count(*) FROM fills GROUP BY order_id")
        assert {f[0] for f in fills} == {o.order_id for o in orders}
        assert {f[1] for f in fills} == {1}
        assert scalar(service_env, "SELECT count(*) FROM positions") == len(orders)

        async def all_results() -> bool:
            filled = {r["order_id"] for r in await results(bus.redis) if r["status"] == "filled"}
            return filled == {o.order_id for o in orders}

        await eventually_async(all_results, what="a filled result for every order")
        assert {r["status"] for r in await results(bus.redis)} <= {"filled", "unknown"}
    finally:
        proc.__exit__()


@pytest.mark.parametrize("fault", ["maintenance", "bad_secret"])
async def test_mexc_refusal_rejects_the_order_with_a_clear_reason(
    fault: str, venue: Venue, bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    secret = "not-the-secret" if fault == "bad_secret" else SECRET
    venue.exchange.under_maintenance = fault == "maintenance"
    env = live_env(service_env, venue.url, secret)
    proc = await start(ServiceProcess("cdb.execution_service", env, tmp_path))
    try:
        await publish_approved(bus, service_env, an_order(venue))
        await eventually_async(
            lambda: scalar(service_env, "SELECT status FROM orders") == "rejected", what="refusal"
        )
        reason = scalar(service_env, "SELECT reason FROM orders")
        expected = "code 9999" if fault == "maintenance" else "code 602"
        assert expected in reason and "under maintenance for many accounts" in reason
        assert venue.exchange.orders == {}

        async def published() -> bool:
            return any(r["status"] == "rejected" for r in await results(bus.redis))

        await eventually_async(published, what="rejection published")
        rejected = [r for r in await results(bus.redis) if r["status"] == "rejected"]
        assert len(rejected) == 1 and expected in rejected[0]["reason"]
    finally:
        proc.__exit__()
    assert secret not in proc.log()


async def test_a_contract_without_api_access_is_refused_before_sending(venue: Venue) -> None:
    venue.sim.set_faults(api_closed=[venue.symbol])  # MEXC closes some contracts to the API
    client = MexcPrivateClient(venue.url, SecretStr(KEY), SecretStr(SECRET))
    try:
        outcome = await MexcVenue(client).prepare(an_order(venue))
    finally:
        await client.close()
    assert isinstance(outcome, VenueOutcome)
    assert outcome.kind == "rejected" and "apiAllowed=false" in outcome.reason
    assert venue.exchange.submits == 0


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({}, "LIVE_TRADING_CONFIRM"),
        ({"LIVE_TRADING_CONFIRM": "yes"}, "MEXC_API_SECRET"),
        (
            {"LIVE_TRADING_CONFIRM": "YES please", "MEXC_API_KEY": KEY, "MEXC_API_SECRET": SECRET},
            "LIVE_TRADING_CONFIRM",
        ),
    ],
)
def test_live_mode_refuses_to_start_without_every_switch(extra: dict[str, str], named: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "TRADING_MODE": "live",
        **extra,
    }
    done = subprocess.run(
        [sys.executable, "-m", "cdb.execution_service"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    # one line per missing switch, each naming its variable; no traceback
    assert all(line.startswith("config error: ") for line in lines), done.stderr
    assert any(named in line for line in lines)
    assert SECRET not in done.stderr


@pytest.mark.slow
async def test_live_end_to_end_from_a_simulated_pump_to_a_mexc_fill(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """mexc_sim as a process (pump scenario, private API keyed by MEXC_SIM_API_*) → bot_ws
    → signal_engine → risk_manager → execution_service in live mode → a signed MEXC order."""
    sim_port = free_port()
    sim_env = {**os.environ, "MEXC_SIM_API_KEY": KEY, "MEXC_SIM_API_SECRET": SECRET}
    args = [
        "--port",
        str(sim_port),
        "--symbols",
        "6",
        "--seed",
        "3",
        "--speed",
        "60",
        "--scenario",
        "pump",
        "--pump-every-min",
        "2",
        "--pump-pct",
        "9",
        "--history-min",
        "30",
    ]
    with (tmp_path / "mexc_sim.log").open("ab") as log:
        sim = subprocess.Popen(
            [sys.executable, "-m", "cdb.mexc_sim", *args],
            env=sim_env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{sim_port}"
    live = {k: v for k, v in live_env(service_env, url).items() if k != "CONSUMER_NAME"}
    pipeline = Pipeline(live, tmp_path)
    bot_ws = ServiceProcess(
        "cdb.bot_ws",
        {
            **service_env,
            **SIM_CLOCK,
            "MEXC_WS_URL": f"ws://127.0.0.1:{sim_port}/edge",
            "MEXC_REST_URL": url,
            "PUBLISH_INTERVAL_S": "1",
            "STALE_AFTER_S": "3600",
        },
        tmp_path,
    )
    try:
        await asyncio.to_thread(pipeline.start)
        bot_ws.start()
        await asyncio.to_thread(bot_ws.wait_healthy, 60, ("ok", "stale"))
        await eventually_async(
            lambda: (
                (scalar(service_env, "SELECT count(*) FROM orders WHERE status = 'filled'") or 0)
                >= 1
            ),
            timeout=120,
            what="a live fill at mexc_sim",
        )
        order_id, external_id, mode = query(
            service_env,
            "SELECT order_id, external_id, mode FROM orders WHERE status = 'filled' LIMIT 1",
        )[0]
        assert external_id == order_id and mode == "live"
        async with httpx.AsyncClient(base_url=url) as http:
            symbol = scalar(
                service_env, "SELECT symbol FROM orders WHERE order_id = %s", (order_id,)
            )
            now = str(int(time.time() * 1000))
            reply = await http.get(
                f"/api/v1/private/order/external/{symbol}/{order_id}",
                headers={
                    "ApiKey": KEY,
                    "Request-Time": now,
                    "Signature": sign(SECRET, KEY, now, ""),
                },
            )
        found = reply.json()
        assert found["success"] is True and found["data"]["state"] == 3
        await eventually_async(
            lambda: (
                scalar(
                    service_env,
                    "SELECT status FROM risk_positions WHERE order_id = %s",
                    (order_id,),
                )
                == "open"
            ),
            what="risk book saw the live fill",
        )
        for proc in pipeline.procs.values():
            assert SECRET not in proc.log()
    finally:
        bot_ws.__exit__()
        pipeline.stop()
        sim.terminate()
        sim.wait(10)


async def test_a_refused_lookup_at_start_keeps_the_order_pending_and_the_service_up(
    venue: Venue, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = live_env(service_env, venue.url, secret="revoked-or-wrong")
    proc = await start(ServiceProcess("cdb.execution_service", env, tmp_path))
    proc.terminate()
    order = an_order(venue, 7)
    insert_pending(service_env, order, submit_attempts=1)  # sent before the key was revoked
    proc = await start(ServiceProcess("cdb.execution_service", env, tmp_path))
    try:
        assert scalar(service_env, "SELECT status FROM orders") == "pending"  # not guessed
        assert "cannot reconcile live order" in proc.log() and "code 602" in proc.log()
        assert "revoked-or-wrong" not in proc.log()
    finally:
        proc.__exit__()
