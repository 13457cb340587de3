"""The trading pipeline: tick-to-order latency through the three services as processes.

``market_data`` published → signal_engine → risk_manager → execution_service →
``order_result`` (filled) received, one event at a time (p50/p99), compared with the raw bus
round trip (XADD → XREADGROUP) measured here the same way; then offered load at rising
rates to find the sustained signals/s before latency climbs (p50 over 4x the unloaded p50,
or the fills falling behind the offered rate; p50 because p99 on a shared machine is
mostly other processes' noise). Each run uses a fresh database (``cdb_bench_pipeline``)
and Redis db 3 of the ``make bench`` stack; after the warm-up ``HISTORY`` closed positions
are written into ``risk_positions``, so a decision whose cost grows with history shows it.

The floor is the same four hops (tick → signal → order → result → here) done raw: XADD then
XREADGROUP four times in a row, one sample per chain. The durable floor adds what exactly
once in effect needs at the least: a committed PostgreSQL row between hops (three commits,
as the three services make). The floors and the pipeline run side by side, alternating,
``REPEATS`` times; each ratio is taken within one repeat and shown as the median with the
min. Counted around the repeats, per tick: PostgreSQL transactions
from ``pg_stat_database`` (``xact_commit + xact_rollback`` of the bench database, all three
services together), Redis commands from ``INFO commandstats`` (without this bench's own
XADD per tick, its XREAD of the results and the floor's chains) and each service's CPU
from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr
from redis.asyncio import Redis

from bench.bench_bus import percentile, raw_round_trip
from cdb.core.bus import Bus, connect_redis
from cdb.core.config import RedisSettings
from cdb.core.events import MarketData, Stream
from cdb.localstack import LocalStack
from cdb.signal_engine.strategy import signal_id_for

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "cdb_bench_pipeline"
REDIS_DB = "3"
SERVICES = {"signal_engine": 18101, "risk_manager": 18102, "execution_service": 18103}
SEQUENTIAL = 200
REPEATS = 3
HISTORY = 100_000  # closed positions in the book's past
HOPS = 4  # market_data → signals → orders → order_results → the watcher
RATES = (50, 100, 200, 400, 800)
LEVEL_S = 4.0


def start_services(env: dict[str, str], log_dir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for name, port in SERVICES.items():
        child_env = {
            **os.environ,
            **env,
            "HTTP_PORT": str(port),
            "HTTP_HOST": "127.0.0.1",
            "CONSUMER_NAME": f"bench-{name}",
            "LOG_LEVEL": "WARNING",
            "MAX_POSITION_PCT": "0.01",
            "MAX_EXPOSURE_PCT": "100",
            "STALE_AFTER_S": "3600",
            "BUS_BLOCK_MS": "1000",
        }
        log = (log_dir / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", f"cdb.{name}"],
                env=child_env,
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        )
    deadline = time.monotonic() + 60
    for port in SERVICES.values():
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service on port {port} did not become healthy")
            time.sleep(0.1)
    return procs


class ResultWatcher:
    """Reads ``cdb:order_results`` and notes when each signal's fill arrived."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.arrived: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.last_id = "$"
        self.stop = asyncio.Event()

    async def wait_for(self, signal_id: str, timeout: float) -> float:
        """When ``signal_id``'s fill arrived, waiting up to ``timeout`` seconds for it
        without polling (a poll every half millisecond took CPU the services measured
        here share two cores with)."""
        if signal_id not in self.arrived:
            waiter = self.waiting[signal_id] = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(waiter, timeout)
            finally:
                self.waiting.pop(signal_id, None)
        return self.arrived[signal_id]

    async def run(self) -> None:
        import json

        while not self.stop.is_set():
            reply: Any = await self.redis.xread(
                {Stream.ORDER_RESULTS.value: self.last_id}, count=500, block=200
            )
            now = time.perf_counter()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    event = json.loads(fields[b"event"])
                    if event["status"] == "filled":
                        self.arrived.setdefault(event["signal_id"], now)
                        waiter = self.waiting.get(event["signal_id"])
                        if waiter is not None and not waiter.done():
                            waiter.set_result(None)


def mover(n: int, tag: str) -> MarketData:
    return MarketData(
        symbol=f"B{tag}{n:05d}_USDT",
        price=10.0 + n % 7,
        volume=500_000.0,
        pct_change=5.0,
        timestamp=int(time.time()),
    )


async def raw_chain(
    redis: Redis, n: int, hops: int = HOPS, conn: AsyncConnection[Any] | None = None
) -> list[float]:
    """``hops`` raw XADD → XREADGROUP in a row per sample: the floor of the pipeline's hops.
    With ``conn`` (autocommit), the durable floor: between hops what each service must do
    at the least between its read and its publish, one committed PostgreSQL row (one
    transaction and one WAL flush), ``hops - 1`` of them per sample; exactly once in
    effect cannot be had for less."""
    streams = [f"bench:chain:{i}" for i in range(hops)]
    for stream in streams:
        await redis.delete(stream)
        await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    payload = {b"event": b'{"x":1}' * 20}
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        for hop, stream in enumerate(streams):
            if hop and conn is not None:
                await conn.execute("INSERT INTO bench_floor (body) VALUES (%s)", ("x",))
            await redis.xadd(stream, payload, maxlen=10_000, approximate=True)
            reply: Any = await redis.xreadgroup("g", "c", {stream: ">"}, count=1, block=1000)
            await redis.xack(stream, "g", reply[0][1][0][0])
        samples.append(time.perf_counter() - started)
    for stream in streams:
        await redis.delete(stream)
    return samples


async def durable_chain(redis: Redis, conninfo: str, n: int) -> list[float]:
    """:func:`raw_chain` with a committed row between hops, in a table of its own."""
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial, body text)")
        samples = await raw_chain(redis, n, conn=conn)
        await conn.execute("DROP TABLE bench_floor")
    return samples


async def pg_transactions(conninfo: str) -> int:
    """Committed plus rolled back transactions of the bench database so far."""
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (DATABASE,),
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def seed_history(conninfo: str, rows: int) -> None:
    """``rows`` closed positions of earlier days in ``risk_positions`` (no PnL, no fees:
    the book's figures stay as they are): a book with a past, so a decision that costs
    O(history) shows it. Written behind the services' back, as a restore would."""
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO risk_positions (order_id, signal_id, symbol, side, quantity,"
            " notional, entry_price, stop_loss, status)"
            " SELECT 'past-' || g, 'past-' || g, 'P' || (g %% 500) || '_USDT', 'long', 1, 10,"
            " 10, 9.8, 'closed' FROM generate_series(1, %s) AS g",
            (rows,),
        )
        await conn.execute("ANALYZE risk_positions")


async def redis_commands(redis: Redis) -> dict[str, int]:
    info: Any = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def sequential(bus: Bus, watcher: ResultWatcher, n: int, tag: str) -> list[float]:
    """``n`` movers one at a time, each of a symbol not seen before (``tag``): a symbol
    seen within the cooldown makes no signal, and one seen in the same second makes the
    same signal id, which would arrive at once."""
    samples = []
    for i in range(n):
        md = mover(i, tag)
        sid = signal_id_for(md, "long")
        started = time.perf_counter()
        await bus.publish(md)
        try:
            arrived = await watcher.wait_for(sid, 30)
        except TimeoutError:
            raise RuntimeError(f"no fill for {md.symbol} within 30 s") from None
        samples.append(arrived - started)
    return samples


async def offered(
    bus: Bus, watcher: ResultWatcher, rate: int, tag: str
) -> tuple[list[float], float]:
    """Publish at ``rate``/s for LEVEL_S; returns latencies and the achieved fill rate."""
    count = int(rate * LEVEL_S)
    sent: dict[str, float] = {}
    begin = time.perf_counter()
    for i in range(count):
        target = begin + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        md = mover(i, tag)
        sent[signal_id_for(md, "long")] = time.perf_counter()
        await bus.publish(md)
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and not all(s in watcher.arrived for s in sent):
        await asyncio.sleep(0.01)
    done = [watcher.arrived[s] - t for s, t in sent.items() if s in watcher.arrived]
    last = max((watcher.arrived[s] for s in sent if s in watcher.arrived), default=begin)
    return done, len(done) / max(1e-9, last - begin)


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    ordered = sorted(v * scale for v in values)
    return f"min {ordered[0]:.{digits}f}, median {statistics.median(ordered):.{digits}f}"


async def measure(env: dict[str, str], conninfo: str, pids: dict[str, int]) -> list[dict[str, Any]]:
    settings = RedisSettings(
        redis_port=int(env["REDIS_PORT"]),
        redis_password=SecretStr(env["REDIS_PASSWORD"]),
        redis_db=3,
    )
    bus = Bus(connect_redis(settings))
    raw = await raw_round_trip(bus.redis, 2000)
    watcher = ResultWatcher(connect_redis(settings))
    reader = asyncio.create_task(watcher.run())
    await asyncio.sleep(0.3)
    await sequential(bus, watcher, 20, "W")  # warm-up (the services created the schema)
    await seed_history(conninfo, HISTORY)
    await asyncio.sleep(2.5)  # the services' periodic work (outbox flushes) settles
    xacts, commands = await pg_transactions(conninfo), await redis_commands(bus.redis)
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    ticks: list[list[float]] = []
    floors: list[list[float]] = []
    durables: list[list[float]] = []
    for repeat in range(REPEATS):  # the floors and the pipeline side by side, alternating
        floors.append(await raw_chain(bus.redis, SEQUENTIAL))
        durables.append(await durable_chain(bus.redis, conninfo, SEQUENTIAL))
        ticks.append(await sequential(bus, watcher, SEQUENTIAL, f"S{repeat}"))
    moved = sum(len(t) for t in ticks)
    cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    # without the durable floor's own: its inserts, and its table's CREATE and DROP
    xacts = await pg_transactions(conninfo) - xacts - REPEATS * ((HOPS - 1) * SEQUENTIAL + 2)
    after = await redis_commands(bus.redis)
    calls = {
        name: after[name] - commands.get(name, 0)
        for name in after
        if name not in ("xread", "info") and after[name] != commands.get(name, 0)
    }
    # this bench's own tick per mover and the floor's chains are not the services'
    calls["xadd"] = calls.get("xadd", 0) - moved - 2 * HOPS * moved
    for name in ("xreadgroup", "xack"):
        calls[name] = calls.get(name, 0) - 2 * HOPS * moved
    per_tick = {name: n / moved for name, n in sorted(calls.items()) if n > 0}
    p50s = [percentile(t, 0.5) for t in ticks]
    p99s = [percentile(t, 0.99) for t in ticks]
    ratio50 = [percentile(t, 0.5) / percentile(f, 0.5) for t, f in zip(ticks, floors, strict=True)]
    ratio99 = [
        percentile(t, 0.99) / percentile(f, 0.99) for t, f in zip(ticks, floors, strict=True)
    ]
    durable_p99 = statistics.median([percentile(f, 0.99) for f in durables])
    durable50 = [
        percentile(t, 0.5) / percentile(f, 0.5) for t, f in zip(ticks, durables, strict=True)
    ]
    durable99 = [
        percentile(t, 0.99) / percentile(f, 0.99) for t, f in zip(ticks, durables, strict=True)
    ]
    base_p50 = statistics.median(p50s)
    sustained, levels = 0, []
    for rate in RATES:
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        latencies, achieved = await offered(bus, watcher, rate, f"R{rate}")
        per_signal = "/".join(
            f"{(cpu_seconds(pid) - before[name]) / max(1, len(latencies)) * 1e3:.2f}"
            for name, pid in pids.items()
        )
        p50 = percentile(latencies, 0.5)
        levels.append(
            f"{rate}/s→p50 {p50 * 1e3:.1f} ms, p99 {percentile(latencies, 0.99) * 1e3:.1f} ms,"
            f" CPU per signal {per_signal} ms"
        )
        if p50 > 4 * base_p50 or achieved < 0.9 * rate:
            break
        sustained = rate
    watcher.stop.set()
    await reader
    await watcher.redis.aclose()
    await bus.close()
    each = (
        f"{REPEATS} repeats of {SEQUENTIAL} movers one at a time, {HISTORY:,} closed"
        " positions in the book's history"
    )
    return [
        {
            "name": "tick→fill p50",
            "value": base_p50 * 1e3,
            "unit": "ms",
            "note": f"median; {spread(p50s, 1e3)}; {each}, 3 services as processes",
        },
        {
            "name": "tick→fill p99",
            "value": statistics.median(p99s) * 1e3,
            "unit": "ms",
            "note": f"median; {spread(p99s, 1e3)}",
        },
        {
            "name": "raw bus round trip p50",
            "value": percentile(raw, 0.5) * 1e3,
            "unit": "ms",
            "note": "XADD→XREADGROUP, 2000 one at a time",
        },
        {
            "name": "raw 4-hop floor p50",
            "value": statistics.median([percentile(f, 0.5) for f in floors]) * 1e3,
            "unit": "ms",
            "note": f"4 x XADD→XREADGROUP in a row, {SEQUENTIAL} chains before each repeat",
        },
        {
            "name": "raw 4-hop floor p99",
            "value": statistics.median([percentile(f, 0.99) for f in floors]) * 1e3,
            "unit": "ms",
            "note": "median of the repeats",
        },
        {
            "name": "tick→fill / raw 4-hop floor p50",
            "value": statistics.median(ratio50),
            "unit": "x",
            "goal": "1",
            "target": 1.5,
            "better": "lower",
            "note": f"target 1.5x; median, {spread(ratio50, digits=1)}",
        },
        {
            "name": "tick→fill / raw 4-hop floor p99",
            "value": statistics.median(ratio99),
            "unit": "x",
            "goal": "1",
            "target": 1.5,
            "better": "lower",
            "note": f"target 1.5x; median, {spread(ratio99, digits=1)}",
        },
        {
            "name": "durable 4-hop floor p50",
            "value": statistics.median([percentile(f, 0.5) for f in durables]) * 1e3,
            "unit": "ms",
            "note": "the raw floor with a committed row between hops (3 commits), median"
            f" of the repeats; p99 {durable_p99 * 1e3:.2f} ms",
        },
        {
            "name": "tick→fill / durable floor p50",
            "value": statistics.median(durable50),
            "unit": "x",
            "note": f"no target (context for 1.5x): median, {spread(durable50, digits=1)};"
            f" p99 ratio median {statistics.median(durable99):.1f}",
        },
        {
            "name": "PostgreSQL transactions per tick",
            "value": xacts / moved,
            "unit": "1/tick",
            "goal": "1",  # at most one per event per service: 4 events per tick
            "target": 4,
            "better": "lower",
            "note": "3 services together (pg_stat_database)",
        },
        {
            "name": "services' CPU per tick",
            "value": sum(cpu.values()) / moved * 1e3,
            "unit": "ms",
            "note": ", ".join(f"{name} {s / moved * 1e3:.2f}" for name, s in cpu.items()),
        },
        {
            "name": "Redis commands per tick",
            "value": sum(per_tick.values()),
            "unit": "1/tick",
            "note": ", ".join(f"{name} {n:.2f}" for name, n in per_tick.items()),
        },
        {
            "name": "sustained signals/s",
            "value": sustained,
            "unit": "1/s",
            "goal": "1",
            "target": 500,
            "better": "higher",
            "note": "target 500/s with p50 < 10 ms; CPU per signal: "
            + "/".join(pids)
            + "; "
            + "; ".join(levels),
        },
    ]


def run(stack: LocalStack) -> list[dict[str, Any]]:
    env = {**stack.env(), "POSTGRES_DB": DATABASE, "REDIS_DB": REDIS_DB}
    stack.postgres.create_database(DATABASE)  # as the cluster's superuser, owned by cdb_user
    import redis

    redis.Redis(port=int(env["REDIS_PORT"]), password=env["REDIS_PASSWORD"], db=3).flushdb()
    procs = start_services(env, stack.data_dir / "bench-pipeline-logs")
    try:
        conninfo = make_conninfo(
            host="127.0.0.1",
            port=env["POSTGRES_PORT"],
            dbname=DATABASE,
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
        )
        pids = {name: proc.pid for name, proc in zip(SERVICES, procs, strict=True)}
        return asyncio.run(measure(env, conninfo, pids))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
