"""The bus: the physical floor (raw XADD → XREADGROUP) against the kernel's publish → handler.

Both are measured one event at a time (latency, not throughput) over 10,000 events on the
local Redis of ``make bench``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from pydantic import SecretStr
from redis.asyncio import Redis

from cdb.core.bus import Bus, Consumer, connect_redis
from cdb.core.config import RedisSettings
from cdb.core.events import MarketData, Stream
from cdb.core.metrics import Health, ServiceMetrics
from cdb.localstack import LocalStack

EVENTS = 10_000


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def raw_round_trip(redis: Redis, n: int) -> list[float]:
    stream = "bench:raw"
    await redis.delete(stream)
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    payload = {b"event": b'{"x":1}' * 20}
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await redis.xadd(stream, payload, maxlen=10_000, approximate=True)
        reply: Any = await redis.xreadgroup("g", "c", {stream: ">"}, count=1, block=1000)
        entry_id = reply[0][1][0][0]
        samples.append(time.perf_counter() - started)
        await redis.xack(stream, "g", entry_id)
    await redis.delete(stream)
    return samples


async def kernel_round_trip(settings: RedisSettings, n: int) -> list[float]:
    metrics = ServiceMetrics("bench", Health(60))
    bus = Bus(connect_redis(settings), metrics=metrics)
    await bus.redis.delete(Stream.MARKET_DATA.value)
    arrived = asyncio.Event()
    samples: list[float] = []
    sent_at = 0.0

    async def handle(event: MarketData) -> None:
        samples.append(time.perf_counter() - sent_at)
        arrived.set()

    stop = asyncio.Event()
    consumer = Consumer(Stream.MARKET_DATA, MarketData, handle, group="bench", block_ms=1000)
    await bus.ensure_group(Stream.MARKET_DATA, "bench", "$")
    task = asyncio.create_task(consumer.run(bus, "bench", stop))
    for i in range(n):
        arrived.clear()
        event = MarketData(
            symbol="BTC_USDT",
            price=43000.0 + i,
            volume=150000.0,
            pct_change=4.5,
            timestamp=int(time.time()),
        )
        sent_at = time.perf_counter()
        await bus.publish(event)
        await arrived.wait()
    stop.set()
    await task
    await bus.redis.delete(Stream.MARKET_DATA.value)
    await bus.close()
    return samples


async def measure(stack: LocalStack) -> list[dict[str, Any]]:
    env = stack.env()
    settings = RedisSettings(
        redis_port=int(env["REDIS_PORT"]), redis_password=SecretStr(env["REDIS_PASSWORD"])
    )
    redis = connect_redis(settings)
    raw = await raw_round_trip(redis, EVENTS)
    await redis.aclose()
    kernel = await kernel_round_trip(settings, EVENTS)
    rows = []
    for name, samples in (("raw XADD→XREADGROUP", raw), ("kernel publish→handler", kernel)):
        rows.append(
            {
                "name": f"{name} p50",
                "value": percentile(samples, 0.5) * 1e3,
                "unit": "ms",
                "note": f"{len(samples)} events, one at a time",
            }
        )
        rows.append(
            {
                "name": f"{name} p99",
                "value": percentile(samples, 0.99) * 1e3,
                "unit": "ms",
                "note": f"mean {statistics.fmean(samples) * 1e3:.3f} ms",
            }
        )
    rows.append(
        {
            "name": "kernel/raw ratio p50",
            "value": percentile(kernel, 0.5) / percentile(raw, 0.5),
            "unit": "x",
            "note": "",
        }
    )
    rows.append(
        {
            "name": "kernel/raw ratio p99",
            "value": percentile(kernel, 0.99) / percentile(raw, 0.99),
            "unit": "x",
            "note": "",
        }
    )
    return rows


def run(stack: LocalStack) -> list[dict[str, Any]]:
    return asyncio.run(measure(stack))
