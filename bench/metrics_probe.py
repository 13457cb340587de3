"""A service-shaped process for the Prometheus overhead benchmark.

``python -m bench.metrics_probe PORT on|off EVENTS OUT.json``: one process with the
kernel's HTTP face and the kernel's bus and consumer, handling a steady 200 events/s of
``market_data`` that it publishes itself. ``on``: the bus and consumer record the
kernel's metrics (counters, the handler histogram) and ``/metrics`` serves them (the
benchmark scrapes it every second); ``off``: the same code with ``metrics=None``, as a
service without metrics would run it. After a warm-up, ``EVENTS`` events are measured:
each one's latency from just before ``publish`` to the start of its handler, and the
process's CPU time over the window (everything: the event loop, the bus, the HTTP server
answering the scrapes). The figures go to ``OUT.json``, then the process exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import uvicorn
from pydantic import SecretStr

from cdb.core.bus import Bus, Consumer, connect_redis
from cdb.core.config import RedisSettings
from cdb.core.events import MarketData, Stream
from cdb.core.http import HttpState, create_app
from cdb.core.metrics import Health, ServiceMetrics

WARM_UP = 400  # events before the measured window
INTERVAL_S = 0.005  # 200 events/s


async def main(port: int, with_metrics: bool, events: int, out: str) -> None:
    settings = RedisSettings(
        redis_port=int(os.environ["REDIS_PORT"]),
        redis_password=SecretStr(os.environ["REDIS_PASSWORD"]),
    )
    health = Health(60)
    served = ServiceMetrics("probe", health)  # the HTTP face exists in both modes
    metrics = served if with_metrics else None
    state = HttpState("probe", health, served, dict)
    state.ready = True  # as in a real service once its dependencies are up
    app = create_app(state)
    bus = Bus(connect_redis(settings), metrics=metrics)
    group = f"probe-{os.getpid()}"
    sent: dict[str, float] = {}
    latencies: list[float] = []
    stop = asyncio.Event()
    window: dict[str, float] = {}

    handled = 0

    async def handle(event: MarketData) -> None:
        nonlocal handled
        began = sent.pop(event.event_id, None)
        seen = time.perf_counter()
        health.touch()
        if began is None:
            return
        handled += 1
        if handled == WARM_UP:
            window["cpu"], window["wall"] = time.process_time(), seen
        elif handled > WARM_UP and not stop.is_set():
            latencies.append(seen - began)
            if len(latencies) >= events:
                window["cpu"] = time.process_time() - window["cpu"]
                window["wall"] = seen - window["wall"]
                stop.set()

    consumer = Consumer(Stream.MARKET_DATA, MarketData, handle, group=group, start="$")
    await bus.ensure_group(Stream.MARKET_DATA, group, "$")

    async def produce() -> None:
        while not stop.is_set():
            event = MarketData(
                symbol="BTC_USDT", price=1.0, volume=1.0, pct_change=0.1, timestamp=int(time.time())
            )
            sent[event.event_id] = time.perf_counter()
            await bus.publish(event)
            await asyncio.sleep(INTERVAL_S)

    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, access_log=False))

    async def serve() -> None:
        await server.serve()

    async def stop_server() -> None:
        await stop.wait()
        server.should_exit = True

    await asyncio.gather(serve(), stop_server(), consumer.run(bus, "probe", stop), produce())
    with open(out, "w") as file:
        json.dump({"latencies_s": latencies, "cpu_s": window["cpu"], "wall_s": window["wall"]},
                  file)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] == "on", int(sys.argv[3]), sys.argv[4]))
