"""The transactional outbox: events written in the same transaction as their effect,
published after the commit (table ``outbox``, one ``service`` column per writer).

A crash between commit and publish loses nothing: unpublished rows are published on the
next :meth:`Outbox.flush` (at start and periodically). A row published twice carries the
same ``event_id``, which consumers skip.

The hot path costs no query of its own: rows added inside :meth:`Outbox.transaction` are
published straight from memory once their commit returned (:meth:`Outbox.flush_added`,
one pipelined ``XADD`` for all), and marked published by the *next* such transaction, in
its own round trip. Until then a row still reads unpublished: a crash or a periodic
flush in between publishes it again, which is a copy with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cdb.core.bus import Bus
from cdb.core.db import AsyncConnection, Database
from cdb.core.events import Event, Stream

__all__ = ["Outbox"]

_MARK = (
    "UPDATE outbox SET published_at = now()"
    " WHERE service = %s AND event_id = ANY(%s) AND published_at IS NULL"
)


@dataclass(frozen=True)
class _Row:
    event_id: str
    stream: Stream
    payload: bytes


class Outbox:
    def __init__(self, service: str, db: Database, bus: Bus) -> None:
        self.service = service
        self.db = db
        self.bus = bus
        self._flushing = asyncio.Lock()
        self._added = False  # a row was added outside a transaction() since the last flush
        self._staged: dict[int, list[_Row]] = {}  # per open transaction() (by connection)
        self._committed: list[_Row] = []  # committed, not yet published from memory
        self._unmarked: list[str] = []  # published from memory, not yet marked

    @contextlib.asynccontextmanager
    async def transaction(self, conn: AsyncConnection[Any]) -> AsyncIterator[None]:
        """``conn.transaction()`` whose added rows :meth:`flush_added` publishes from
        memory once it committed (never before: a rolled back row is never published).
        Rows published earlier are marked in it, so marking costs no transaction."""
        staged: list[_Row] = []
        marking, self._unmarked = self._unmarked, []
        self._staged[id(conn)] = staged
        try:
            async with conn.transaction():
                yield
                if marking:
                    await conn.execute(_MARK, (self.service, marking))
        except BaseException:
            self._unmarked[:0] = marking  # not marked: the next one tries again
            raise
        finally:
            del self._staged[id(conn)]
        self._committed.extend(staged)

    async def add(self, conn: AsyncConnection[Any], event: Event, stream: Stream) -> None:
        """Inside the caller's transaction (:meth:`transaction` to publish it at once)."""
        payload = event.model_dump_json()
        await conn.execute(
            "INSERT INTO outbox (service, event_id, stream, payload) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (event_id) DO NOTHING",
            (self.service, event.event_id, stream.value, payload),
        )
        staged = self._staged.get(id(conn))
        if staged is None:
            self._added = True
        else:
            staged.append(_Row(event.event_id, stream, payload.encode()))

    async def flush_added(self) -> int:
        """Publish what this process committed since the last call: rows of
        :meth:`transaction` from memory (no query), rows added otherwise by :meth:`flush`.
        A handler that added none costs nothing (rows a crash left behind go out with the
        start's and the periodic flush)."""
        published = 0
        if self._committed:
            rows, self._committed = self._committed, []
            try:
                await self.bus.publish_payloads([(row.stream, row.payload) for row in rows])
            except BaseException:
                self._committed[:0] = rows  # still unpublished, in memory and in the table
                raise
            self._unmarked.extend(row.event_id for row in rows)
            published = len(rows)
        if self._added:
            published += await self.flush()
        return published

    async def flush(self) -> int:
        """Mark what was published from memory, then publish what the table still holds
        unpublished, oldest first (500 at most per call); returns how many."""
        self._added = False  # an add() from now on is flushed by a later call
        async with self._flushing:
            async with self.db.connection() as conn:
                if self._unmarked:
                    marking, self._unmarked = self._unmarked, []
                    try:
                        await conn.execute(_MARK, (self.service, marking))
                    except BaseException:
                        self._unmarked[:0] = marking
                        raise
                cursor = await conn.execute(
                    "SELECT id, stream, payload FROM outbox"
                    " WHERE service = %s AND published_at IS NULL ORDER BY id LIMIT 500",
                    (self.service,),
                )
                rows = await cursor.fetchall()
            if not rows:
                return 0
            await self.bus.publish_payloads(
                [(Stream(stream), str(payload).encode()) for _, stream, payload in rows]
            )
            async with self.db.connection() as conn:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)",
                    ([row_id for row_id, _, _ in rows],),
                )
        return len(rows)
