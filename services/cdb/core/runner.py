"""Runs one service: its consumers, tasks and HTTP server in one event loop.

Start-up: settings validated (a bad value exits 2 with one line), HTTP up at once
(``/health`` answers ``starting``), then Redis and PostgreSQL waited for with backoff,
migrations applied, ``service.start()``, consumers. SIGTERM/SIGINT: intake stops, the
entry in flight is finished and acknowledged, tasks end, pools close, exit 0 — all
within ``SHUTDOWN_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Generator, Sequence
from typing import Any, TypeVar

import uvicorn

from cdb.core.bus import (
    UNREACHABLE,
    Backoff,
    Bus,
    BusAuthError,
    Consumer,
    TransientError,
    connect_redis,
    is_transient,
    sleep_unless,
)
from cdb.core.config import ServiceSettings, load_settings_or_exit
from cdb.core.db import Database, apply_migrations
from cdb.core.http import HttpState, Starlette, create_app
from cdb.core.logging import configure_logging
from cdb.core.metrics import Health, ServiceMetrics
from cdb.core.service import Kernel, Service

__all__ = ["http_server", "main", "serve"]

log = logging.getLogger("cdb.runner")

S = TypeVar("S", bound=ServiceSettings)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def http_server(app: Starlette, settings: ServiceSettings) -> uvicorn.Server:
    """uvicorn for a service's app: HTTP only (no service serves WebSockets, so uvicorn's
    WebSocket protocol and the websockets library stay unloaded), no access log."""
    return _Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
        )
    )


async def _wait_for_database(db: Database, settings: ServiceSettings, stop: asyncio.Event) -> None:
    """Open the pool (it reconnects by itself), then apply migrations once PostgreSQL answers."""
    await db.open(wait=False)
    backoff = Backoff(cap=5.0)
    while not stop.is_set():
        try:
            if await db.ping():
                if settings.migrate_on_start:
                    await apply_migrations(settings)
                return
            error: Exception | str = "no connection"
        except Exception as failure:
            if not is_transient(failure):
                raise
            error = failure
        delay = backoff.next_delay()
        log.warning(
            "postgres unreachable, retrying",
            extra={
                "host": settings.postgres_host,
                "error": str(error)[:300],
                "retry_in_s": round(delay, 2),
            },
        )
        await sleep_unless(stop, delay)
    raise TransientError("stopped while waiting for postgres")


async def serve(
    service_cls: type[Service[S]],
    settings: S,
    *,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
) -> int:
    """Run until stopped; returns the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    name = service_cls.name
    health = Health(settings.stale_after_s, watches_input=service_cls.watches_input)
    metrics = ServiceMetrics(name, health)
    service: Service[S] | None = None
    state = HttpState(name, health, metrics, lambda: service.status() if service else {})
    bus = Bus(
        connect_redis(settings),
        metrics=metrics,
        max_len=settings.bus_max_len,
        publish_timeout_s=settings.bus_publish_timeout_s,
    )
    db = (
        Database(settings, application_name=f"{name}/{settings.consumer_name}")
        if service_cls.uses_database
        else None
    )

    kernel = Kernel(name=name, bus=bus, db=db, metrics=metrics, health=health, stop=stop)
    service = service_cls(settings, kernel)
    server = http_server(create_app(state, service.router()), settings)
    try:
        listener = _bind(settings.http_host, settings.http_port)
    except OSError as error:
        log.error(f"cannot listen on {settings.http_host}:{settings.http_port}: {error.strerror}")
        await bus.close()
        return 1
    http_task = asyncio.create_task(server.serve(sockets=[listener]), name=f"{name}-http")
    workers: list[asyncio.Task[Any]] = []
    try:
        try:
            state.waiting_for = f"redis at {settings.redis_host}:{settings.redis_port}"
            await bus.wait_ready(stop)
            if db is not None:
                state.waiting_for = (
                    f"postgres at {settings.postgres_host}:{settings.postgres_port}"
                    " (and its migrations)"
                )
                await _wait_for_database(db, settings, stop)
        except TransientError:
            return 0  # stopped before the dependencies came up: nothing in flight
        except BusAuthError as error:
            log.error(f"redis rejected the credentials (check REDIS_PASSWORD): {error}")
            return 2
        state.waiting_for = "its own start-up (state rebuilt from the stores)"
        if stop.is_set() or not await _start_service(service, stop, state, db):
            return 0
        consumers = service.consumers()
        for consumer in consumers:
            metrics.watch_stream(consumer.stream.value)
        await _create_groups(bus, consumers)
        for consumer in consumers:
            workers.append(
                asyncio.create_task(
                    consumer.run(bus, settings.consumer_name, stop, health),
                    name=f"{name}-{consumer.stream.value}",
                )
            )
        workers.extend(asyncio.create_task(task()) for task in service.tasks())
        health.started_at = time.time()  # staleness counts from readiness
        state.waiting_for = ""
        state.ready = True
        log.info("service ready", extra={"port": settings.http_port})

        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [stopper, http_task, *workers], return_when=asyncio.FIRST_COMPLETED
        )
        stopper.cancel()
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("a worker crashed", exc_info=task.exception())
                stop.set()
                return 1
        log.info("stopping: finishing in-flight work")
        stop.set()
        if workers:
            _, pending = await asyncio.wait(workers, timeout=settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
        return 0
    finally:
        state.ready = False
        with contextlib.suppress(Exception):
            await service.close()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http_task, timeout=5.0)
        if db is not None:
            with contextlib.suppress(Exception):
                await db.close()
        with contextlib.suppress(Exception):
            await bus.close()
        log.info("stopped")


async def _create_groups(bus: Bus, consumers: Sequence[Consumer[Any]]) -> None:
    """Every consumer group exists before the service says it is ready: a group that reads
    from ``$`` would otherwise miss what is published between readiness and its creation.
    If Redis drops meanwhile, each consumer creates its own group when it comes back."""
    for consumer in consumers:
        try:
            await bus.ensure_group(consumer.stream, consumer.group, consumer.start)
        except UNREACHABLE as error:
            log.warning(
                "consumer group not created before readiness",
                extra={"stream": consumer.stream.value, "error": str(error)},
            )


async def _start_service(
    service: Service[Any], stop: asyncio.Event, state: HttpState, db: Database | None
) -> bool:
    """``service.start()``, retried while a dependency is down; False if stopped first.
    Meanwhile ``/health`` says what it waits for, down to a PostgreSQL lock held elsewhere."""
    watcher = asyncio.create_task(_report_lock_waits(db, state)) if db is not None else None
    try:
        backoff = Backoff(cap=5.0)
        while not stop.is_set():
            try:
                await service.start()
                return True
            except Exception as error:
                if not is_transient(error):
                    raise
                delay = backoff.next_delay()
                state.waiting_for = f"a dependency that is down: {str(error)[:200]}"
                log.warning(
                    "start-up needs a dependency that is down, retrying",
                    extra={"error": str(error)[:300], "retry_in_s": round(delay, 2)},
                )
                await sleep_unless(stop, delay)
        return False
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _report_lock_waits(db: Database, state: HttpState, interval_s: float = 1.0) -> None:
    """Every second of a slow start-up: the locks this process waits for, logged once each."""
    reported = ""
    while True:
        await asyncio.sleep(interval_s)
        try:
            waits = await db.lock_waits()
        except Exception as error:  # a probe only: the start-up itself reports real failures
            log.debug("lock probe failed", extra={"error": str(error)[:200]})
            continue
        if not waits:
            continue
        state.waiting_for = "; ".join(waits)
        if state.waiting_for != reported:
            reported = state.waiting_for
            log.warning("start-up waits for a lock", extra={"waiting_for": reported})


def _bind(host: str, port: int) -> socket.socket:
    """Bind the HTTP port before anything else, so a taken port fails at once, clearly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def main(service_cls: type[Service[S]], settings_cls: type[S]) -> None:
    """``python -m cdb.<service>``: validate config, run, exit with the result."""
    settings = load_settings_or_exit(settings_cls)
    configure_logging(service_cls.name, settings.log_level)
    raise SystemExit(asyncio.run(serve(service_cls, settings)))
