"""A service-shaped process for the Prometheus overhead benchmark.

``python -m bench.metrics_probe PORT on|off``: serves ``/health`` (and, with metrics,
the kernel's ``/metrics``) and handles a steady 200 events/s through the kernel's
consumer, with or without the kernel's metrics.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from cdb.core.bus import Bus, Consumer, connect_redis
from cdb.core.config import RedisSettings
from cdb.core.events import MarketData, Stream
from cdb.core.http import HttpState, create_app
from cdb.core.metrics import Health, ServiceMetrics


async def main(port: int, with_metrics: bool) -> None:
    settings = RedisSettings(
        redis_port=int(os.environ["REDIS_PORT"]),
        redis_password=SecretStr(os.environ["REDIS_PASSWORD"]),
    )
    health = Health(60)
    metrics = ServiceMetrics("probe", health) if with_metrics else None
    if metrics is not None:
        state = HttpState("probe", health, metrics, dict)
        state.ready = True  # as in a real service once its dependencies are up
        app = create_app(state)
    else:
        app = FastAPI()

        @app.get("/health")
        def plain_health() -> dict[str, str]:
            return {"status": "ok"}

    bus = Bus(connect_redis(settings), metrics=metrics)
    group = f"probe-{os.getpid()}"

    async def handle(event: MarketData) -> None:
        health.touch()

    stop = asyncio.Event()
    consumer = Consumer(Stream.MARKET_DATA, MarketData, handle, group=group, start="$")
    await bus.ensure_group(Stream.MARKET_DATA, group, "$")

    async def produce() -> None:
        while not stop.is_set():
            await bus.publish(
                MarketData(
                    symbol="BTC_USDT",
                    price=1.0,
                    volume=1.0,
                    pct_change=0.1,
                    timestamp=int(time.time()),
                )
            )
            await asyncio.sleep(0.005)

    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, access_log=False))
    await asyncio.gather(server.serve(), consumer.run(bus, "probe", stop), produce())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] == "on"))
