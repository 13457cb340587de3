"""Helpers for the trading-pipeline tests (no tests here): the three services as real
processes, a restartable Redis with AOF, and reads of the books."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cdb.core.acl import write_acl_file
from cdb.core.bus import Bus
from cdb.core.events import Candle, MarketData, Order
from tests.conftest import acl_env, as_user
from tests.support import ServiceProcess, free_port

SERVICES = ("signal_engine", "risk_manager", "execution_service")

FAST_BUS = {
    "BUS_CLAIM_IDLE_MS": "1000",
    "BUS_BLOCK_MS": "200",
    "STALE_AFTER_S": "3600",
    "SHUTDOWN_GRACE_S": "5",
    "LIVE_POLL_INTERVAL_S": "1",
}


def market(
    symbol: str,
    pct: float,
    *,
    price: float = 100.0,
    ts: int | None = None,
    volume: float = 250_000.0,
) -> MarketData:
    return MarketData(
        symbol=symbol,
        price=price,
        volume=volume,
        pct_change=pct,
        timestamp=int(time.time()) if ts is None else ts,
    )


def candle(
    symbol: str,
    *,
    low: float,
    high: float,
    open_: float,
    close: float,
    open_time: int | None = None,
) -> Candle:
    return Candle(
        symbol=symbol,
        open_time=int(time.time()) if open_time is None else open_time,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=1000.0,
        turnover=100_000.0,
    )


def conninfo(env: dict[str, str]) -> str:
    return (
        f"host={env['POSTGRES_HOST']} port={env['POSTGRES_PORT']} "
        f"dbname={env['POSTGRES_DB']} user={env['POSTGRES_USER']}"
    )


def approve(env: dict[str, str], order: Order) -> None:
    """The decision row risk_manager writes for ``order``: without it execution_service
    refuses the order (tests that stand in for risk_manager write it first)."""
    with psycopg.connect(conninfo(env), connect_timeout=5, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO risk_decisions (signal_id, decision, order_id, order_event)"
            " VALUES (%s, 'approved', %s, %s) ON CONFLICT DO NOTHING",
            (order.signal_id, order.order_id, Jsonb(order.model_dump(mode="json"))),
        )


async def publish_approved(bus: Bus, env: dict[str, str], order: Order) -> None:
    """Approve ``order`` as risk_manager would, then put it on ``cdb:orders``."""
    await asyncio.to_thread(approve, env, order)
    await bus.publish(order)


def query(env: dict[str, str], sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """A fresh connection per read, so a PostgreSQL restart does not break the test."""
    with psycopg.connect(conninfo(env), connect_timeout=5, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())


def scalar(env: dict[str, str], sql: str, params: Any = None) -> Any:
    try:
        rows = query(env, sql, params)
    except psycopg.Error:
        return None
    return rows[0][0] if rows else None


async def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (psycopg.Error, OSError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached within {timeout:.0f}s: {what}")


class Pipeline:
    """signal_engine, risk_manager and execution_service as child processes."""

    def __init__(self, env: dict[str, str], log_dir: Path, **extra: str) -> None:
        self.env = {**env, **FAST_BUS, **extra}
        self.log_dir = log_dir
        self.procs: dict[str, ServiceProcess] = {}

    def start(self, *names: str) -> Pipeline:
        for name in names or SERVICES:
            env = as_user({**self.env, "CONSUMER_NAME": f"{name}-0"}, name)
            port = self.procs[name].port if name in self.procs else None
            self.procs[name] = ServiceProcess(f"cdb.{name}", env, self.log_dir, port=port).start()
        for name in names or SERVICES:
            self.procs[name].wait_healthy(timeout=60, accept=("ok", "stale"))
        return self

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.__exit__()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()[-3000:]}" for n, p in self.procs.items())


class RedisServer:
    """redis-server from the binary, AOF on (fsync always), restartable on the same port;
    its users (the admin and one per service) from an ACL file, no password in argv."""

    def __init__(self, data_dir: Path, password: str) -> None:
        self.data_dir = data_dir
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        acl_file = self.data_dir / "users.acl"
        write_acl_file(acl_file, {**acl_env(), "REDIS_PASSWORD": self.password})
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--aclfile",
                str(acl_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        import redis

        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, password=self.password).ping():
                    return self
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def env(self) -> dict[str, str]:
        return {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.port),
            "REDIS_PASSWORD": self.password,
        }


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = ""
) -> None:
    """``wait_until`` for an async check (a read of Redis through the test's bus)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached within {timeout:.0f}s: {what}")


async def group_caught_up(redis: Any, stream: str, group: str) -> bool:
    """True once ``group`` has read and acknowledged everything on ``stream``."""
    for info in await redis.xinfo_groups(stream):
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == group:
            return bool(info["pending"] == 0 and info["lag"] == 0)
    return False
