"""The outbox on a real PostgreSQL and Redis: published after the commit and never before,
from memory on the hot path, marked by the next transaction, nothing lost on a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.db import Database, apply_migrations
from cdb.core.events import Stream
from cdb.core.outbox import Outbox
from tests.support import market


@pytest.fixture
async def database(settings: ServiceSettings) -> AsyncIterator[Database]:
    await apply_migrations(settings)
    db = Database(settings)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def on_bus(bus: Bus) -> list[str]:
    entries: Any = await bus.redis.xrange(Stream.MARKET_DATA.value)
    return [fields[b"event"].decode() for _, fields in entries]


async def unpublished(db: Database) -> list[str]:
    async with db.connection() as conn:
        cursor = await conn.execute(
            "SELECT event_id FROM outbox WHERE published_at IS NULL ORDER BY id"
        )
        return [r[0] for r in await cursor.fetchall()]


async def test_rows_go_out_after_the_commit_from_memory_and_are_marked_by_the_next(
    database: Database, bus: Bus
) -> None:
    outbox = Outbox("svc", database, bus)
    first, second = market("A_USDT"), market("B_USDT")
    async with database.connection() as conn, conn.pipeline(), outbox.transaction(conn):
        await outbox.add(conn, first, Stream.MARKET_DATA)
        assert await on_bus(bus) == []  # not before the commit
    assert await outbox.flush_added() == 1
    assert await on_bus(bus) == [first.model_dump_json()]
    assert await unpublished(database) == [first.event_id]  # marked by the next one
    async with database.connection() as conn, conn.pipeline(), outbox.transaction(conn):
        await outbox.add(conn, second, Stream.MARKET_DATA)
    assert await unpublished(database) == [second.event_id]
    assert await outbox.flush_added() == 1
    assert await outbox.flush() == 0  # marks the second, publishes nothing again
    assert await unpublished(database) == []
    assert len(await on_bus(bus)) == 2


async def test_a_rolled_back_row_is_never_published(database: Database, bus: Bus) -> None:
    outbox = Outbox("svc", database, bus)
    with pytest.raises(RuntimeError, match="handler failed"):
        async with database.connection() as conn, outbox.transaction(conn):
            await outbox.add(conn, market("GONE_USDT"), Stream.MARKET_DATA)
            raise RuntimeError("handler failed")
    assert await outbox.flush_added() == 0
    assert await outbox.flush() == 0
    assert await on_bus(bus) == [] and await unpublished(database) == []


async def test_a_crash_after_the_commit_loses_nothing(database: Database, bus: Bus) -> None:
    """The process that committed dies before publishing (or before marking): the next
    one publishes the row at its start's flush, as a copy with the same id at worst."""
    dying = Outbox("svc", database, bus)
    event = market("KEPT_USDT")
    async with database.connection() as conn, dying.transaction(conn):
        await dying.add(conn, event, Stream.MARKET_DATA)
    # no flush_added: the process is gone with its memory
    restarted = Outbox("svc", database, bus)
    assert await restarted.flush() == 1
    assert await on_bus(bus) == [event.model_dump_json()]
    assert await unpublished(database) == []


async def test_rows_added_outside_a_transaction_block_go_out_with_flush(
    database: Database, bus: Bus
) -> None:
    outbox = Outbox("svc", database, bus)
    events = [market(f"S{i}_USDT") for i in range(3)]
    async with database.connection() as conn, conn.transaction():
        for event in events:
            await outbox.add(conn, event, Stream.MARKET_DATA)
    assert await outbox.flush_added() == 3  # by one query, one pipelined publish
    assert await on_bus(bus) == [e.model_dump_json() for e in events]
    assert await unpublished(database) == []
