"""execution_service takes the paper orders of one read in one transaction: the same rows
and results as one order at a time; a refused order in a read is dead-lettered alone; a
SIGKILL before the batch's commit, or after it and before its acknowledgement, leaves
every order filled exactly once after the restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations
from cdb.core.events import Order, Stream
from tests.support import (
    Pipeline,
    conninfo,
    eventually_async,
    publish_approved,
    query,
    scalar,
    scrape,
    waiting_to_insert,
)

pytestmark = pytest.mark.slow

N = 6


@pytest.fixture
async def books_env(service_env: dict[str, str], settings: ServiceSettings) -> dict[str, str]:
    """``service_env`` with the schema in place, so orders are approved and on the
    stream before execution_service starts: it reads them all in one read."""
    await apply_migrations(settings)
    return service_env


def an_order(name: str, index: int) -> Order:
    return Order(
        event_id=f"{name}-{index}",
        order_id=f"{name}-{index}",
        signal_id=f"{name}-signal-{index}",
        symbol=f"B{index}_USDT",
        side="long" if index % 2 else "short",
        quantity=10.0 + index,
        notional=1000.0 + 100 * index,
        price=100.0,
        stop_loss=98.0 if index % 2 else 102.0,
        timestamp=time.time(),
    )


async def results_on_bus(bus: Bus) -> list[str]:
    entries: Any = await bus.redis.xrange(Stream.ORDER_RESULTS.value)
    return [json.loads(fields[b"event"])["event_id"] for _, fields in entries]


async def pending_orders(bus: Bus) -> int:
    info: Any = await bus.redis.xpending(Stream.ORDERS.value, "execution_service")
    return int(info["pending"])


async def acknowledged(bus: Bus) -> bool:
    return await pending_orders(bus) == 0


def books(env: dict[str, str], prefix: str) -> list[tuple[Any, ...]]:
    """Each order's row, fill, position and outbox row, without its ids and clocks."""
    return query(
        env,
        "SELECT o.symbol, o.side, o.quantity, o.status, o.mode, o.reason, o.submit_attempts,"
        " f.kind, f.price, f.quantity, f.fee, p.status, p.entry_price, p.stop_loss,"
        " x.stream, x.payload::jsonb - 'event_id' - 'order_id' - 'signal_id' - 'timestamp'"
        " FROM orders o JOIN fills f USING (order_id) JOIN positions p USING (order_id)"
        " JOIN outbox x ON x.event_id = o.order_id || ':filled'"
        " WHERE o.order_id LIKE %s ORDER BY o.symbol",
        (f"{prefix}-%",),
    )


def transactions(env: dict[str, str], prefix: str) -> int:
    """How many transactions wrote these orders (``created_at`` is the transaction's now())."""
    return int(
        scalar(
            env,
            "SELECT count(DISTINCT created_at) FROM orders WHERE order_id LIKE %s",
            (f"{prefix}-%",),
        )
    )


def all_published(env: dict[str, str], orders: int) -> bool:
    return (
        scalar(env, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
        and scalar(env, "SELECT count(*) FROM orders") == orders
    )


async def test_a_read_of_orders_books_what_one_order_at_a_time_books(
    bus: Bus, books_env: dict[str, str], tmp_path: Path
) -> None:
    batch = [an_order("batch", i) for i in range(N)]
    for order in batch:  # on the stream before the service reads: one read
        await publish_approved(bus, books_env, order)
    pipeline = Pipeline(books_env, tmp_path).start("execution_service")
    try:
        await eventually_async(
            lambda: all_published(books_env, N), "the read's orders executed", timeout=30
        )
        singles = [an_order("single", i) for i in range(N)]
        for count, order in enumerate(singles, start=N + 1):
            await publish_approved(bus, books_env, order)
            await eventually_async(
                lambda c=count: all_published(books_env, c), "the order executed", timeout=30
            )
        assert transactions(books_env, "batch") == 1, "the read was not one transaction"
        assert transactions(books_env, "single") == N
        assert books(books_env, "batch") == books(books_env, "single")
        assert len(books(books_env, "batch")) == N
        # the outbox may publish a result twice (a periodic flush between commit and
        # publish): a copy with the same event id, which consumers skip
        assert set(await results_on_bus(bus)) == {f"{o.order_id}:filled" for o in batch + singles}
        assert await pending_orders(bus) == 0
        url = pipeline.procs["execution_service"].url
        assert scrape(url, "execution_orders_total", status="filled") == 2 * N
    finally:
        pipeline.stop()


async def test_a_refused_order_in_a_read_is_dead_lettered_alone(
    bus: Bus, books_env: dict[str, str], tmp_path: Path
) -> None:
    orders = [an_order("mixed", i) for i in range(N)]
    forged = orders[2]
    for order in orders:
        if order is forged:
            await bus.publish(order)  # no approved decision: refused
        else:
            await publish_approved(bus, books_env, order)
    pipeline = Pipeline(books_env, tmp_path).start("execution_service")
    try:
        await eventually_async(
            lambda: all_published(books_env, N - 1), "the others executed", timeout=30
        )
        await eventually_async(lambda: acknowledged(bus), "the orders acknowledged", timeout=30)
        letters: Any = await bus.redis.xrange(Stream.DEAD_LETTER.value)
        assert [fields[b"event_id"].decode() for _, fields in letters] == [forged.event_id]
        reason = letters[0][1][b"reason"].decode()
        assert reason.startswith("refused: no approved risk decision"), reason
        assert (
            query(books_env, "SELECT order_id FROM orders WHERE order_id = %s", (forged.order_id,))
            == []
        )
        assert scalar(books_env, "SELECT count(*) FROM fills") == N - 1
        results = await results_on_bus(bus)
        assert set(results) == {f"{o.order_id}:filled" for o in orders if o is not forged}
        url = pipeline.procs["execution_service"].url
        assert scrape(url, "execution_orders_total", status="refused") == 1
        assert scrape(url, "execution_orders_total", status="filled") == N - 1
        assert await pending_orders(bus) == 0
    finally:
        pipeline.stop()


async def assert_each_filled_once(bus: Bus, env: dict[str, str], orders: list[Order]) -> None:
    assert query(env, "SELECT DISTINCT status FROM orders") == [("filled",)]
    assert scalar(env, "SELECT count(*) FROM orders") == len(orders)
    assert scalar(env, "SELECT count(*) FROM fills") == len(orders)
    assert scalar(env, "SELECT count(*) FROM positions") == len(orders)
    # a result published again by a restart carries the same event id (skipped downstream)
    assert set(await results_on_bus(bus)) == {f"{o.order_id}:filled" for o in orders}
    assert await pending_orders(bus) == 0
    assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0


async def test_killed_before_the_batch_commits_every_order_fills_once(
    bus: Bus, books_env: dict[str, str], tmp_path: Path
) -> None:
    orders = [an_order("kill-before", i) for i in range(N)]
    for order in orders:
        await publish_approved(bus, books_env, order)
    blocker = psycopg.connect(conninfo(books_env), connect_timeout=5)
    pipeline = Pipeline(books_env, tmp_path)
    try:
        blocker.execute("LOCK TABLE fills IN EXCLUSIVE MODE")  # held until rollback
        pipeline.start("execution_service")
        await eventually_async(
            lambda: waiting_to_insert(books_env, "fills"), "the batch's transaction at its fills"
        )
        pipeline.kill("execution_service")  # SIGKILL inside the batch's transaction
        blocker.rollback()
        await eventually_async(
            lambda: not waiting_to_insert(books_env, "fills"), "the dead transaction rolled back"
        )
        assert scalar(books_env, "SELECT count(*) FROM orders") == 0, "half a batch stayed"
        assert await results_on_bus(bus) == []
        assert await pending_orders(bus) == N

        pipeline.start("execution_service")  # the same consumer: its entries come again
        await eventually_async(
            lambda: all_published(books_env, N), "the batch executed again", timeout=30
        )
        await eventually_async(lambda: acknowledged(bus), "the orders acknowledged", timeout=30)
        await assert_each_filled_once(bus, books_env, orders)
    finally:
        blocker.close()
        pipeline.stop()


async def test_killed_after_the_batch_committed_before_its_ack_every_order_fills_once(
    bus: Bus, books_env: dict[str, str], tmp_path: Path
) -> None:
    orders = [an_order("kill-after", i) for i in range(N)]
    for order in orders:
        await publish_approved(bus, books_env, order)
    blocker = psycopg.connect(conninfo(books_env), connect_timeout=5)
    pipeline = Pipeline(books_env, tmp_path)
    paused = False
    try:
        blocker.execute("LOCK TABLE fills IN EXCLUSIVE MODE")
        pipeline.start("execution_service")
        await eventually_async(
            lambda: waiting_to_insert(books_env, "fills"), "the batch's transaction at its fills"
        )
        # Redis takes no write now: the results' XADD and the XACK after the commit wait
        await bus.redis.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        paused = True
        blocker.rollback()  # the batch commits
        await eventually_async(
            lambda: scalar(books_env, "SELECT count(*) FROM orders") == N,
            "the batch committed",
        )
        pipeline.kill("execution_service")  # SIGKILL after the commit, before the XACK
        await bus.redis.execute_command("CLIENT", "UNPAUSE")
        paused = False
        assert await pending_orders(bus) == N, "acknowledged before the kill"
        assert scalar(books_env, "SELECT count(*) FROM fills") == N

        pipeline.start("execution_service")  # redelivered: each order finds its row
        await eventually_async(
            lambda: all_published(books_env, N), "the results published", timeout=30
        )
        await eventually_async(lambda: acknowledged(bus), "the orders acknowledged", timeout=30)
        await assert_each_filled_once(bus, books_env, orders)
    finally:
        if paused:
            await bus.redis.execute_command("CLIENT", "UNPAUSE")
        blocker.close()
        pipeline.stop()
