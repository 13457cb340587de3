"""execution_service's stop watch against its periodic reload from the store.

The service keeps open positions in memory for the stop watch and reloads them from
PostgreSQL every ``live_poll_interval_s`` (to see a replica's fills and stops). A reload
reads a snapshot, then swaps it in. A fill or a stop that commits between the read and the
swap must survive the swap: a position dropped from memory is not stopped out until the
next reload, and the day's equity (and every later order's size) drifts from the rules.

These tests pause a real reload right after its read (the read itself is the real query
on a real PostgreSQL), let a fill or a stop commit, then let the reload finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.db import Database, apply_migrations
from cdb.core.events import Candle, Order
from cdb.core.metrics import Health, ServiceMetrics
from cdb.core.service import Kernel
from cdb.execution_service import store
from cdb.execution_service.book import OpenPosition
from cdb.execution_service.service import ExecutionService
from cdb.execution_service.settings import ExecutionSettings
from cdb.execution_service.venue import PriceMove
from tests.support import eventually_async

SYMBOL = "X_USDT"


@pytest.fixture
async def service(settings: ServiceSettings, bus: Bus) -> AsyncIterator[ExecutionService]:
    exec_settings = ExecutionSettings(**settings.model_dump())
    await apply_migrations(exec_settings)
    database = Database(exec_settings)
    await database.open()
    health = Health(60.0)
    kernel = Kernel(
        name="execution_service",
        bus=bus,
        db=database,
        metrics=ServiceMetrics("execution_service", health),
        health=health,
        stop=asyncio.Event(),
    )
    the_service = ExecutionService(exec_settings, kernel)
    approved = [an_order(order_id) for order_id in ("ord-1", "ord-2", "ord-3")]
    async with database.connection() as conn:
        for order in approved:  # as risk_manager decides them
            await conn.execute(
                "INSERT INTO risk_decisions (signal_id, decision, order_id, order_event)"
                " VALUES (%s, 'approved', %s, %s)",
                (order.signal_id, order.order_id, Jsonb(order.model_dump(mode="json"))),
            )
    await the_service.start()
    the_service.prices[SYMBOL] = 100.0
    try:
        yield the_service
    finally:
        await database.close()


def an_order(order_id: str = "ord-1") -> Order:
    return Order(
        event_id=order_id,
        order_id=order_id,
        signal_id=f"sig-{order_id}",
        symbol=SYMBOL,
        side="long",
        quantity=10.0,
        notional=1000.0,
        price=100.0,
        stop_loss=98.0,
        timestamp=1_700_000_000.0,
    )


class PausedReload:
    """``store.load_open_positions`` as it is, but the reload waits after reading."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.read = asyncio.Event()
        self.release = asyncio.Event()
        real = store.load_open_positions

        async def read_then_wait(conn: Any) -> list[OpenPosition]:
            rows = await real(conn)
            self.read.set()
            await self.release.wait()
            return rows

        monkeypatch.setattr(store, "load_open_positions", read_then_wait)

    async def around(
        self,
        service: ExecutionService,
        change: Callable[[], Awaitable[None]],
        committed: str,
        *,
        waits: bool = False,
    ) -> None:
        """Reload, and while it holds its snapshot, make ``change`` and wait until the
        store shows it (``committed``: a query that returns a row once it did). ``waits``:
        the change must instead wait for the reload to finish before it commits."""
        reload = asyncio.create_task(service._reload_positions())
        await asyncio.wait_for(self.read.wait(), 10)
        changing = asyncio.create_task(change())
        if waits:
            await asyncio.wait({changing}, timeout=0.5)
            assert not await row(service, committed), "committed while a reload held its read"
            self.release.set()
            await asyncio.wait_for(asyncio.gather(reload, changing), 10)
            assert await row(service, committed)
            return
        await eventually_async(
            lambda: row(service, committed), "the change committed", timeout=10, every=0.01
        )
        # the change is durable; give it time to finish in memory too (it may be waiting
        # for the reload to swap, which is what a correct service does)
        await asyncio.wait({changing}, timeout=0.5)
        self.release.set()
        await asyncio.wait_for(asyncio.gather(reload, changing), 10)


async def row(service: ExecutionService, query: str) -> bool:
    async with service.kernel.database.connection() as conn:
        cursor = await conn.execute(query)
        return await cursor.fetchone() is not None


async def test_a_fill_during_a_reload_stays_under_the_stop_watch(
    service: ExecutionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = an_order()
    await PausedReload(monkeypatch).around(
        service,
        lambda: service.on_order(order),
        f"SELECT 1 FROM positions WHERE order_id = '{order.order_id}'",
    )
    assert order.order_id in service.positions.get(SYMBOL, {}), (
        "the reload's older snapshot dropped the new position from the stop watch"
    )
    # and so the next bar through its stop closes it, once
    bar = Candle(
        symbol=SYMBOL,
        open_time=int(time.time()) // 60 * 60 + 60,
        open=99.0,
        high=99.5,
        low=97.0,
        close=97.5,
        volume=1000.0,
        turnover=98_000.0,
    )
    await service.on_candle(bar)
    closed = f"SELECT 1 FROM positions WHERE order_id = '{order.order_id}' AND status = 'closed'"
    assert await row(service, closed)


async def test_the_watch_measures_bars_from_the_stored_opening_time(
    service: ExecutionService,
) -> None:
    """In memory as in the store: a bar opening between the two must not count fully
    before a reload and only with its close after it."""
    order = an_order("ord-3")
    await service.on_order(order)
    in_memory = service.positions[SYMBOL][order.order_id].opened_at
    await service._reload_positions()
    assert service.positions[SYMBOL][order.order_id].opened_at == in_memory


async def test_a_stop_during_a_reload_is_not_undone_by_it(
    service: ExecutionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = an_order("ord-2")
    await service.on_order(order)
    assert order.order_id in service.positions[SYMBOL]
    tick = 97.0  # through the 98.0 stop

    async def stop_out() -> None:
        position = service.positions[SYMBOL][order.order_id]
        move = PriceMove(SYMBOL, low=tick, high=tick, open_=None, last=tick,
                         start=time.time(), end=time.time())  # fmt: skip
        fill = service.venue.stop_exit(position, move)
        assert fill is not None
        await service._close(position, fill)

    closed = f"SELECT 1 FROM positions WHERE order_id = '{order.order_id}' AND status = 'closed'"
    # a close waits for a reload to swap its snapshot in, then adds its PnL to it
    await PausedReload(monkeypatch).around(service, stop_out, closed, waits=True)
    assert order.order_id not in service.positions.get(SYMBOL, {}), (
        "the reload's older snapshot put a closed position back under the stop watch"
    )
    async with service.kernel.database.connection() as conn:
        cursor = await conn.execute("SELECT sum(realized_pnl) FROM positions")
        stored = await cursor.fetchone()
    assert stored is not None and stored[0] < 0
    assert service.realized == pytest.approx(stored[0]), "realised PnL lost the stop's loss"
