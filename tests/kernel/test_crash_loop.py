"""A crash loop while a handler waits loses nothing, and a start-up says what it waits for.

execution_service is SIGKILLed seven times while a test transaction holds a lock on the
``orders`` table, so each run re-reads its pending order and blocks on that lock; Redis
counts seven deliveries. Once the lock is gone the order fills exactly once and nothing is
dead-lettered. A risk_manager started while its book lock is held says so in ``/health``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cdb.core.bus import Bus
from cdb.core.events import Signal, Stream
from tests.support import FAST_BUS, ServiceProcess, as_user, conninfo, eventually_async, scalar

pytestmark = pytest.mark.slow

RESTARTS = 7


def signal(symbol: str) -> Signal:
    sid = f"sig-{symbol}-{time.time_ns()}"
    return Signal(
        event_id=sid,
        signal_id=sid,
        symbol=symbol,
        side="long",
        confidence=0.5,
        reason="scripted",
        price=100.0,
        pct_change=5.0,
        timestamp=time.time(),
    )


def service(module: str, env: dict[str, str], tmp_path: Path, port: int | None = None) -> Any:
    extra = {**FAST_BUS, "CONSUMER_NAME": f"{module}-0", "BUS_MAX_ATTEMPTS": "3"}
    return ServiceProcess(f"cdb.{module}", as_user({**env, **extra}, module), tmp_path, port=port)


async def deliveries(bus: Bus) -> int:
    """How often Redis delivered the one pending order to execution_service."""
    pending: Any = await bus.redis.xpending_range(
        Stream.ORDERS.value, "execution_service", min="-", max="+", count=10
    )
    return int(pending[0]["times_delivered"]) if pending else 0


async def test_an_order_survives_seven_crashes_while_its_handler_waits_on_a_lock(
    service_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    risk = service("risk_manager", service_env, tmp_path).start()
    execution = service("execution_service", service_env, tmp_path).start()
    locker = psycopg.connect(conninfo(service_env))
    try:
        await asyncio.to_thread(risk.wait_healthy, 60, ("ok", "stale"))
        await asyncio.to_thread(execution.wait_healthy, 60, ("ok", "stale"))
        locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # held until commit
        sig = signal("LOCKED_USDT")
        await bus.publish(sig)
        await eventually_async(lambda: _delivered_at_least(bus, 1), what="the order read")
        for restart in range(RESTARTS):
            seen = await deliveries(bus)
            execution.kill()
            execution = service("execution_service", service_env, tmp_path, execution.port)
            execution.start()
            await eventually_async(
                lambda seen=seen: _delivered_at_least(bus, seen + 1),  # type: ignore[misc]
                timeout=60,
                what=f"the order re-read after restart {restart + 1}",
            )
        assert await deliveries(bus) > RESTARTS
        locker.commit()
        await eventually_async(
            lambda: scalar(service_env, "SELECT count(*) FROM fills") == 1,
            what="the order filled",
        )
        await eventually_async(
            lambda: _nothing_pending(bus), what="the order acknowledged after its fill"
        )
        assert scalar(service_env, "SELECT count(*) FROM orders WHERE status = 'filled'") == 1
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0
    finally:
        locker.close()
        execution.__exit__()
        risk.__exit__()


async def _delivered_at_least(bus: Bus, times: int) -> bool:
    return await deliveries(bus) >= times


async def _nothing_pending(bus: Bus) -> bool:
    info: Any = await bus.redis.xpending(Stream.ORDERS.value, "execution_service")
    return int(info["pending"]) == 0


async def test_a_start_up_blocked_on_a_lock_says_what_it_waits_for(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    migrate = service("risk_manager", service_env, tmp_path).start()  # the schema first
    await asyncio.to_thread(migrate.wait_healthy, 60, ("ok", "stale"))
    migrate.__exit__()
    locker = psycopg.connect(conninfo(service_env), autocommit=True)
    locker.execute("SELECT pg_advisory_lock(hashtext('cdb:risk_book'))")
    risk = service("risk_manager", service_env, tmp_path).start()
    try:
        body: dict[str, Any] = {}

        def reports_the_lock() -> bool:
            nonlocal body
            try:
                body = httpx.get(f"{risk.url}/health", timeout=2).json()
            except httpx.TransportError:  # not listening yet
                return False
            return "advisory" in body.get("waiting_for", "")

        await eventually_async(reports_the_lock, timeout=30, what="/health naming the lock")
        assert body["status"] == "starting"
        assert "pg_advisory_xact_lock" in body["waiting_for"]
        assert str(locker.info.backend_pid) in body["waiting_for"]
        locker.execute("SELECT pg_advisory_unlock(hashtext('cdb:risk_book'))")
        await asyncio.to_thread(risk.wait_healthy, 30, ("ok", "stale"))
    finally:
        locker.close()
        risk.__exit__()
