"""The transactional outbox: events written in the same transaction as their effect,
published after the commit (table ``outbox``, one ``service`` column per writer).

A crash between commit and publish loses nothing: unpublished rows are published on the
next flush (at start, after each handler, and periodically). A row published twice
carries the same ``event_id``, which consumers skip.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cdb.core.bus import Bus
from cdb.core.db import AsyncConnection, Database
from cdb.core.events import AnyEvent, Event, Stream

__all__ = ["Outbox"]


class Outbox:
    def __init__(self, service: str, db: Database, bus: Bus) -> None:
        self.service = service
        self.db = db
        self.bus = bus
        self._flushing = asyncio.Lock()
        self._added = False

    async def add(self, conn: AsyncConnection[Any], event: Event, stream: Stream) -> None:
        """Inside the caller's transaction."""
        await conn.execute(
            "INSERT INTO outbox (service, event_id, stream, payload) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (event_id) DO NOTHING",
            (self.service, event.event_id, stream.value, event.model_dump_json()),
        )
        self._added = True

    async def flush_added(self) -> int:
        """:meth:`flush` if this process added a row since the last flush: a handler's
        own events go out at once, and a handler that added none costs no query (rows a
        crash left behind go out with the start's and the periodic flush)."""
        if not self._added:
            return 0
        return await self.flush()

    async def flush(self) -> int:
        """Publish what is not published yet, oldest first; returns how many."""
        published = 0
        self._added = False  # an add() from now on is flushed by a later call
        async with self._flushing:
            async with self.db.connection() as conn:
                cursor = await conn.execute(
                    "SELECT id, stream, payload FROM outbox"
                    " WHERE service = %s AND published_at IS NULL ORDER BY id LIMIT 500",
                    (self.service,),
                )
                rows = await cursor.fetchall()
            for row_id, stream, payload in rows:
                await self.bus.publish(AnyEvent.validate_json(payload), Stream(stream))
                async with self.db.connection() as conn:
                    await conn.execute(
                        "UPDATE outbox SET published_at = now() WHERE id = %s", (row_id,)
                    )
                published += 1
        return published
