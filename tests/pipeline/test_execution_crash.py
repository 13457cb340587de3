"""A paper order is one transaction: execution_service SIGKILLed inside it leaves nothing,
and the redelivered order is executed once (one order, one fill, one position, its result
on the bus)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdb.core.bus import Bus
from cdb.core.events import Order, Stream
from tests.support import (
    Pipeline,
    conninfo,
    eventually_async,
    publish_approved,
    query,
    scalar,
    waiting_to_insert,
)

pytestmark = pytest.mark.slow


def an_order() -> Order:
    return Order(
        event_id="crash-order-1",
        order_id="crash-order-1",
        signal_id="crash-signal-1",
        symbol="CRASH_USDT",
        side="long",
        quantity=10.0,
        notional=1000.0,
        price=100.0,
        stop_loss=98.0,
        timestamp=time.time(),
    )


async def results_on_bus(bus: Bus, order_id: str) -> list[str]:
    entries: Any = await bus.redis.xrange(Stream.ORDER_RESULTS.value)
    events = [json.loads(fields[b"event"]) for _, fields in entries]
    return [e["event_id"] for e in events if e["order_id"] == order_id]


async def test_killed_inside_the_orders_transaction_it_leaves_nothing_and_fills_once(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    pipeline = Pipeline(service_env, tmp_path).start("execution_service")
    order = an_order()
    blocker = psycopg.connect(conninfo(service_env), connect_timeout=5)
    try:
        blocker.execute("LOCK TABLE fills IN EXCLUSIVE MODE")  # held until rollback
        await publish_approved(bus, service_env, order)
        await eventually_async(
            lambda: waiting_to_insert(service_env, "fills"), "the order's transaction at its fill"
        )
        pipeline.kill("execution_service")  # SIGKILL inside the transaction
        blocker.rollback()
        await eventually_async(
            lambda: not waiting_to_insert(service_env, "fills"), "the dead transaction rolled back"
        )
        assert scalar(service_env, "SELECT count(*) FROM orders") == 0, "a half order stayed"
        assert await results_on_bus(bus, order.order_id) == []

        pipeline.start("execution_service")  # the same consumer: the entry comes again
        await eventually_async(
            lambda: (
                scalar(service_env, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
                and scalar(service_env, "SELECT count(*) FROM orders") == 1
            ),
            "the redelivered order executed and its result published",
            timeout=30,
        )
        assert query(service_env, "SELECT order_id, status FROM orders") == [
            (order.order_id, "filled")
        ]
        assert scalar(service_env, "SELECT count(*) FROM fills") == 1
        assert scalar(service_env, "SELECT count(*) FROM positions") == 1
        assert set(await results_on_bus(bus, order.order_id)) == {f"{order.order_id}:filled"}
    finally:
        blocker.close()
        pipeline.stop()
