"""risk_manager as a real process: the breaker on a scripted path survives a restart, the
exposure cap holds with two replicas deciding concurrently, shadow ML never trades."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdb.core.bus import Bus
from cdb.core.events import MlSignal, Order, OrderResult, ShapFeature, Signal, Stream
from tests.support import (
    FAST_BUS,
    ServiceProcess,
    eventually_async,
    group_caught_up,
    query,
    scalar,
    scrape,
)

pytestmark = pytest.mark.slow


def signal(symbol: str, price: float = 100.0) -> Signal:
    sid = f"sig-{symbol}-{time.time_ns()}"
    return Signal(
        event_id=sid,
        signal_id=sid,
        symbol=symbol,
        side="long",
        confidence=0.5,
        reason="scripted",
        price=price,
        pct_change=5.0,
        timestamp=time.time(),
    )


async def start(env: dict[str, str], tmp_path: Path, name: str = "risk-0") -> ServiceProcess:
    proc = ServiceProcess(
        "cdb.risk_manager", {**env, **FAST_BUS, "CONSUMER_NAME": name}, tmp_path
    ).start()
    await asyncio.to_thread(proc.wait_healthy, 60, ("ok", "stale"))
    return proc


async def decided(bus: Bus, env: dict[str, str], sig: Signal) -> tuple[str, str]:
    await bus.publish(sig)
    await eventually_async(
        lambda: (
            scalar(
                env, "SELECT count(*) FROM risk_decisions WHERE signal_id = %s", (sig.signal_id,)
            )
            == 1
        ),
        what=f"decision on {sig.symbol}",
    )
    row = query(
        env,
        "SELECT decision, coalesce(order_id, reason) FROM risk_decisions WHERE signal_id = %s",
        (sig.signal_id,),
    )[0]
    return str(row[0]), str(row[1])


async def close_with_loss(bus: Bus, env: dict[str, str], order_id: str, loss: float) -> None:
    row = query(env, "SELECT order_event FROM risk_decisions WHERE order_id = %s", (order_id,))
    order = Order.model_validate_json(json.dumps(row[0][0]))
    common: dict[str, Any] = {
        "order_id": order_id,
        "symbol": order.symbol,
        "side": "long",
        "fill_price": order.price,
        "quantity": order.quantity,
        "timestamp": time.time(),
    }
    await bus.publish(OrderResult(status="filled", **common))
    await bus.publish(OrderResult(status="closed", realized_pnl=-loss, **common))
    await eventually_async(
        lambda: (
            scalar(env, "SELECT status FROM risk_positions WHERE order_id = %s", (order_id,))
            == "closed"
        ),
    )


ADMIN_TOKEN = "test-only-admin-token"


async def test_breaker_trips_at_exactly_five_percent_and_stays_tripped_across_a_restart(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    service_env = {**service_env, "ADMIN_TOKEN": ADMIN_TOKEN}
    proc = await start(service_env, tmp_path)
    try:
        for n, loss in enumerate([300.0, 199.99]):
            verdict, order_id = await decided(bus, service_env, signal(f"LOSS{n}_USDT"))
            assert verdict == "approved"
            await close_with_loss(bus, service_env, order_id, loss)
        assert proc.status()["book"]["breaker_active"] is False
        verdict, order_id = await decided(bus, service_env, signal("LAST_USDT"))
        assert verdict == "approved"  # 0.01 USDT short of the limit: still trading
        await close_with_loss(bus, service_env, order_id, 0.01)  # now exactly 500 = 5 %

        book = proc.status()["book"]
        assert book["breaker_active"] is True and book["daily_pnl_usdt"] == pytest.approx(-500)
        assert "risk_circuit_breaker_active 1.0" in httpx.get(f"{proc.url}/metrics").text
        events = query(
            service_env, "SELECT kind, reason FROM risk_events WHERE kind = 'circuit_breaker'"
        )
        assert len(events) == 1 and "5%" in events[0][1]

        async def alerted() -> bool:
            return bool(await bus.redis.xlen(Stream.ALERTS.value))

        await eventually_async(alerted, what="alert published")
        alerts = await bus.redis.xrange(Stream.ALERTS.value)
        assert len(alerts) == 1
        alert = json.loads(alerts[0][1][b"event"])
        assert alert["kind"] == "circuit_breaker" and alert["severity"] == "critical"
        assert await decided(bus, service_env, signal("AFTER_USDT")) == (
            "rejected",
            "circuit_breaker",
        )

        proc.kill()  # a crash: the breaker lives in PostgreSQL, not in memory
        proc = await start(service_env, tmp_path)
        assert proc.status()["book"]["breaker_active"] is True
        assert await decided(bus, service_env, signal("RESTART_USDT")) == (
            "rejected",
            "circuit_breaker",
        )
        assert len(await bus.redis.xrange(Stream.ALERTS.value)) == 1  # no second alert

        # lifting the breaker needs the credential from the Secret: refused without it
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
            refused = httpx.post(f"{proc.url}/breaker/reset", headers=headers)
            assert refused.status_code == 401, refused.text
        assert proc.status()["book"]["breaker_active"] is True
        assert await decided(bus, service_env, signal("STILL_USDT")) == (
            "rejected",
            "circuit_breaker",
        )
        assert ADMIN_TOKEN not in json.dumps(proc.status())  # never shown

        reply = httpx.post(
            f"{proc.url}/breaker/reset", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert reply.status_code == 200 and reply.json()["book"]["breaker_active"] is False
        verdict, _ = await decided(bus, service_env, signal("RESET_USDT"))
        assert verdict == "approved"
        assert (
            scalar(service_env, "SELECT count(*) FROM risk_events WHERE kind = 'breaker_reset'")
            == 1
        )
        alerts = await bus.redis.xrange(Stream.ALERTS.value)  # the reset is told as well
        assert [json.loads(a[1][b"event"])["kind"] for a in alerts] == [
            "circuit_breaker",
            "breaker_reset",
        ]
    finally:
        proc.__exit__()


async def test_state_changing_endpoints_refuse_everything_without_a_configured_token(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    proc = await start(service_env, tmp_path)  # no ADMIN_TOKEN
    try:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
            reply = httpx.post(f"{proc.url}/breaker/reset", headers=headers)
            assert reply.status_code == 403 and "ADMIN_TOKEN" in reply.text
        assert httpx.get(f"{proc.url}/status").status_code == 200  # read-only stays open
        assert scalar(service_env, "SELECT count(*) FROM risk_events") == 0
    finally:
        proc.__exit__()


async def test_exposure_cap_holds_with_two_replicas_deciding_concurrently(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    replicas = [await start(service_env, tmp_path, f"risk-{i}") for i in range(2)]
    try:
        signals = [signal(f"C{i:02d}_USDT", price=10.0 + i) for i in range(30)]
        await asyncio.gather(*(bus.publish(s) for s in signals))
        await eventually_async(
            lambda: scalar(service_env, "SELECT count(*) FROM risk_decisions") == 30
        )
        # a decision commits before its order is published and its signal acknowledged
        await eventually_async(
            lambda: sum(consumed(replicas, Stream.SIGNALS)) == 30, what="every signal acked"
        )
        approved = query(service_env, "SELECT notional FROM risk_positions")
        assert len(approved) == 5  # 5 x 10 % = the 50 % cap
        assert {round(n[0], 6) for n in approved} == {1_000.0}  # each 10 % of 10 000 USDT
        assert (
            scalar(service_env, "SELECT count(*) FROM risk_events WHERE reason LIKE 'exposure:%%'")
            == 25
        )
        orders = {
            json.loads(f[b"event"])["order_id"]
            for _, f in await bus.redis.xrange(Stream.ORDERS.value)
        }
        assert len(orders) == 5
        # both replicas decided: the cap held across processes, not inside one
        per_replica = consumed(replicas, Stream.SIGNALS)
        assert all(n > 0 for n in per_replica) and sum(per_replica) == 30, per_replica
    finally:
        for proc in replicas:
            proc.__exit__()


def consumed(replicas: list[ServiceProcess], stream: Stream) -> list[float]:
    """Each replica's count of events of ``stream`` handled and acknowledged."""
    return [scrape(p.url, "cdb_events_consumed_total", stream=stream.value) for p in replicas]


async def test_a_pause_applied_by_one_replica_holds_in_every_replica(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    """A control event reaches one replica (one consumer group per service); the other
    decides from the stored live config too, so no replica trades while paused."""
    from cdb.core.events import Control, ControlSettings

    replicas = [await start(service_env, tmp_path, f"risk-{i}") for i in range(2)]
    try:
        await bus.publish(
            Control(
                bot="b",
                generation=1,
                config_hash="paused",
                timestamp=time.time(),
                settings=ControlSettings(paused=True),
            ),
        )
        await eventually_async(
            lambda: scalar(service_env, "SELECT count(*) FROM control_state") == 1,
            what="the pause stored by one replica",
        )
        await eventually_async(
            lambda: sum(consumed(replicas, Stream.CONTROL)) == 1, what="the pause acked"
        )
        applied = consumed(replicas, Stream.CONTROL)
        assert sorted(applied) == [0, 1], applied  # only one replica got the event
        signals = [signal(f"P{i:02d}_USDT") for i in range(20)]
        await asyncio.gather(*(bus.publish(s) for s in signals))
        await eventually_async(
            lambda: scalar(service_env, "SELECT count(*) FROM risk_decisions") == 20
        )
        await eventually_async(
            lambda: sum(consumed(replicas, Stream.SIGNALS)) == 20, what="every signal acked"
        )
        per_replica = consumed(replicas, Stream.SIGNALS)
        assert all(n > 0 for n in per_replica), per_replica  # both decided
        assert query(service_env, "SELECT DISTINCT reason FROM risk_decisions") == [("paused",)]
        assert await bus.redis.xlen(Stream.ORDERS.value) == 0
        assert all(proc.status()["in_force"]["paused"] is True for proc in replicas)
    finally:
        for proc in replicas:
            proc.__exit__()


async def test_ml_signals_are_persisted_and_counted_in_shadow_mode_never_traded(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    proc = await start(service_env, tmp_path)
    try:
        for i in range(4):
            await bus.publish(
                MlSignal(
                    signal_id=f"ml-{i}",
                    symbol="HOT_USDT",
                    side="long",
                    model="xgb",
                    model_version="v1",
                    confidence=0.99,
                    price=10.0,
                    timestamp=time.time(),
                    top_features=[ShapFeature(feature="pct_change", value=9.0, contribution=0.4)],
                )
            )
        await eventually_async(lambda: scalar(service_env, "SELECT count(*) FROM ml_signals") == 4)
        await eventually_async(
            lambda: "risk_ml_shadow_signals_total 4.0" in httpx.get(f"{proc.url}/metrics").text
        )
        assert scalar(service_env, "SELECT count(*) FROM risk_decisions") == 0
        assert await bus.redis.xlen(Stream.ORDERS.value) == 0
    finally:
        proc.__exit__()


async def test_control_changes_the_limits_live_and_they_survive_a_restart(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    from cdb.core.events import Control, ControlSettings

    proc = await start(service_env, tmp_path)
    try:
        await bus.publish(
            Control(
                bot="b",
                generation=3,
                config_hash="h3",
                timestamp=time.time(),
                settings=ControlSettings(max_position_pct=5.0, stop_loss_pct=1.0),
            ),
        )
        await eventually_async(lambda: proc.status()["in_force"]["max_position_pct"] == 5.0)
        verdict, _ = await decided(bus, service_env, signal("CTL_USDT", price=50.0))
        assert verdict == "approved"
        order = query(service_env, "SELECT notional, stop_loss FROM risk_positions")[0]
        assert order == (pytest.approx(500.0), pytest.approx(49.5))
        await bus.publish(  # an older generation of the same bot is ignored
            Control(
                bot="b",
                generation=2,
                config_hash="h2",
                timestamp=time.time(),
                settings=ControlSettings(max_position_pct=20.0),
            ),
        )
        proc.kill()
        proc = await start(service_env, tmp_path)

        async def control_consumed() -> bool:
            return await group_caught_up(bus.redis, Stream.CONTROL.value, "risk_manager")

        await eventually_async(control_consumed, what="both control events handled")
        in_force = proc.status()["in_force"]
        assert in_force["max_position_pct"] == 5.0 and in_force["stop_loss_pct"] == 1.0
        assert proc.status()["control"]["generation"] == 3
    finally:
        proc.__exit__()


async def test_a_signal_and_a_result_delivered_again_change_nothing(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    """risk_manager keeps no Redis done key for signals and results: a copy reaches the
    handler, which finds the decision (and publishes the same order again, byte for byte)
    or the result's ``equity`` key (and writes nothing)."""
    proc = await start(service_env, tmp_path)
    try:
        sig = signal("AGAIN_USDT")
        verdict, order_id = await decided(bus, service_env, sig)
        assert verdict == "approved"
        await bus.publish(sig)  # the same signal again
        await eventually_async(
            lambda: consumed([proc], Stream.SIGNALS) == [2.0], what="the copy handled"
        )
        orders = [f[b"event"] for _, f in await bus.redis.xrange(Stream.ORDERS.value)]
        assert len(orders) == 2 and orders[0] == orders[1]
        assert scalar(service_env, "SELECT count(*) FROM risk_decisions") == 1
        reserved = query(service_env, "SELECT order_id, status, notional FROM risk_positions")
        assert reserved == [(order_id, "reserved", pytest.approx(1_000.0))]
        order = Order.model_validate_json(orders[0])
        fill = OrderResult(
            order_id=order_id,
            symbol=order.symbol,
            side="long",
            status="filled",
            fill_price=order.price,
            quantity=order.quantity,
            fee=0.2,
            timestamp=time.time(),
        )
        for _ in range(2):
            await bus.publish(fill)
        await eventually_async(
            lambda: consumed([proc], Stream.ORDER_RESULTS) == [2.0], what="both results handled"
        )
        assert query(service_env, "SELECT status, fees FROM risk_positions") == [("open", 0.2)]
        assert scalar(service_env, "SELECT count(*) FROM equity") == 1
        assert proc.status()["book"]["equity_usdt"] == pytest.approx(10_000 - 0.2)
    finally:
        proc.__exit__()
