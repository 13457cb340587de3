"""``cdb demo``: bring up what exists offline and show events flowing through it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from cdb.core.bus import Bus, Consumer, connect_redis
from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations
from cdb.core.events import MarketData, Stream
from cdb.core.metrics import Health, ServiceMetrics
from cdb.localstack import LocalStack

__all__ = ["run_demo"]


async def run_demo(data_dir: Path, events: int) -> int:
    console = Console()
    stack = LocalStack(data_dir)
    with console.status("starting Redis and PostgreSQL"):
        await asyncio.to_thread(stack.start)
    env = stack.env()
    settings = ServiceSettings(
        redis_port=int(env["REDIS_PORT"]),
        redis_password=SecretStr(env["REDIS_PASSWORD"]),
        postgres_port=int(env["POSTGRES_PORT"]),
    )
    console.print(f"[green]✓[/] Redis on 127.0.0.1:{env['REDIS_PORT']} (password, AOF on)")
    console.print(f"[green]✓[/] PostgreSQL on 127.0.0.1:{env['POSTGRES_PORT']}")
    applied = await apply_migrations(settings)
    console.print(f"[green]✓[/] migrations: {', '.join(applied) or 'up to date'}")

    metrics = ServiceMetrics("demo", Health(60))
    bus = Bus(connect_redis(settings), metrics=metrics)
    received: list[tuple[MarketData, float]] = []
    done = asyncio.Event()

    async def on_market_data(event: MarketData) -> None:
        received.append((event, time.time()))
        if len(received) >= events:
            done.set()

    group = f"demo-{int(time.time())}"
    consumer = Consumer(Stream.MARKET_DATA, MarketData, on_market_data, group=group, start="$")
    await bus.ensure_group(Stream.MARKET_DATA, group, "$")
    task = asyncio.create_task(consumer.run(bus, "demo", done))
    now = int(time.time())
    for i in range(events):
        await bus.publish(
            MarketData(
                symbol=f"DEMO{i}_USDT",
                price=100.0 + i,
                volume=150_000.0 + i,
                pct_change=3.0 + i / 2,
                timestamp=now,
            )
        )
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        done.set()
        await task
        await bus.close()
    table = Table(title="market_data through the bus (published → handled, acknowledged)")
    for column in ("symbol", "price", "volume", "pct_change", "event_id"):
        table.add_column(column)
    for event, _ in received:
        table.add_row(
            event.symbol,
            f"{event.price:.2f}",
            f"{event.volume:,.0f}",
            f"{event.pct_change:+.2f}%",
            event.event_id[:12],
        )
    console.print(table)
    await asyncio.to_thread(stack.stop)
    console.print(f"stopped Redis and PostgreSQL; data kept in {data_dir}")
    return 0 if len(received) == events else 1
