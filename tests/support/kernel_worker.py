"""A minimal service on the kernel, for the kernel's own process-level tests.

It consumes ``market_data`` and, after ``HANDLER_DELAY_S``, records one effect row per
event (``ON CONFLICT DO NOTHING``: idempotent on the event id) plus one attempt row per
handler run, so a test can tell deliveries from effects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cdb.core.bus import Consumer
from cdb.core.config import ServiceSettings
from cdb.core.events import MarketData, Stream
from cdb.core.runner import main
from cdb.core.service import Service

SCHEMA = """
CREATE TABLE IF NOT EXISTS kernel_attempts (id bigserial PRIMARY KEY, event_id text, consumer text);
CREATE TABLE IF NOT EXISTS kernel_effects (event_id text PRIMARY KEY, consumer text);
"""


class WorkerSettings(ServiceSettings):
    handler_delay_s: float = 0.0


class KernelWorker(Service[WorkerSettings]):
    name = "kernel_worker"

    async def start(self) -> None:
        async with self.kernel.database.connection() as conn:
            await conn.execute(SCHEMA)

    def consumers(self) -> Sequence[Consumer[Any]]:
        return [self.consumer(Stream.MARKET_DATA, MarketData, self.on_market_data)]

    async def on_market_data(self, event: MarketData) -> None:
        me = self.settings.consumer_name
        async with self.kernel.database.connection() as conn:
            await conn.execute(
                "INSERT INTO kernel_attempts (event_id, consumer) VALUES (%s, %s)",
                (event.event_id, me),
            )
        await asyncio.sleep(self.settings.handler_delay_s)
        async with self.kernel.database.connection() as conn:
            await conn.execute(
                "INSERT INTO kernel_effects (event_id, consumer) VALUES (%s, %s) "
                "ON CONFLICT (event_id) DO NOTHING",
                (event.event_id, me),
            )


if __name__ == "__main__":
    main(KernelWorker, WorkerSettings)
