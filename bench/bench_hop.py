"""One durable hop's CPU per event: one transaction per event against one per read batch.

A hop is what each of the three pipeline services does around its own logic, the least
that exactly once in effect needs: read from a stream (consumer group), commit a row keyed
by the event id (``ON CONFLICT DO NOTHING``), publish to the next stream, acknowledge.
Measured without any trading logic, pydantic or metrics, over ``EVENTS`` events already
in the stream: the CPU seconds of this process, of redis-server and of the PostgreSQL
backend (``/proc``), per event, and the wall time per event.

* per event: the services' shape today: XREADGROUP, then per entry a transaction (BEGIN,
  INSERT, COMMIT), an XADD and an XACK.
* per batch of ``k``: one XREADGROUP of up to ``k`` entries, one transaction with the
  ``k`` INSERTs pipelined, ``k`` XADDs and one XACK in one pipeline.

Issue 17's goal 1 asks for 500 signals/s through three services on this 2-core machine,
under 4 ms of CPU per tick for everything; this shows what the hops alone cost each way.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
from redis.asyncio import Redis

from cdb.localstack import LocalStack

EVENTS = 3000
BATCHES = (1, 10, 50)  # 1: one transaction per event, as the services run today
REPEATS = 3
DATABASE = "cdb_bench_hop"
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def hop(redis: Redis, conn: psycopg.AsyncConnection[Any], batch: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per event of moving ``EVENTS`` events through one hop."""
    await redis.delete("bench:hop:in", "bench:hop:out")
    body = json.dumps(
        {"event_id": "0" * 32, "symbol": "BTC_USDT", "price": 1.2345, "pad": "x" * 300}
    )
    async with redis.pipeline(transaction=False) as pipe:
        for _ in range(EVENTS):
            pipe.xadd("bench:hop:in", {"event": body})
        await pipe.execute()
    await redis.xgroup_create("bench:hop:in", "g", id="0")
    await conn.execute("TRUNCATE hop")
    redis_pid = int((await redis.info("server"))["process_id"])
    row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    backend = int(row[0])
    insert = "INSERT INTO hop VALUES (%s, %s) ON CONFLICT DO NOTHING"
    cpu0, redis0, pg0 = own_cpu(), process_cpu(redis_pid), process_cpu(backend)
    began = time.perf_counter()
    moved = 0
    while moved < EVENTS:
        reply = await redis.xreadgroup("g", "c", {"bench:hop:in": ">"}, count=batch)
        entries = reply[0][1]
        if batch == 1:
            for entry_id, fields in entries:
                async with conn.transaction():
                    await conn.execute(insert, (entry_id.decode(), fields[b"event"].decode()))
                await redis.xadd("bench:hop:out", {"event": fields[b"event"]})
                await redis.xack("bench:hop:in", "g", entry_id)
        else:
            async with conn.transaction(), conn.pipeline():
                for entry_id, fields in entries:
                    await conn.execute(insert, (entry_id.decode(), fields[b"event"].decode()))
            async with redis.pipeline(transaction=False) as pipe:
                for _, fields in entries:
                    pipe.xadd("bench:hop:out", {"event": fields[b"event"]})
                pipe.xack("bench:hop:in", "g", *[entry_id for entry_id, _ in entries])
                await pipe.execute()
        moved += len(entries)
    wall = time.perf_counter() - began
    cpu = own_cpu() - cpu0 + process_cpu(redis_pid) - redis0 + process_cpu(backend) - pg0
    row = await (await conn.execute("SELECT count(*) FROM hop")).fetchone()
    assert row is not None and row[0] == EVENTS, row  # every event committed once
    return cpu / EVENTS * 1e3, wall / EVENTS * 1e3


async def measure(stack: LocalStack) -> list[dict[str, Any]]:
    stack.postgres.create_database(DATABASE)
    redis = Redis(port=stack.redis_port, password=stack.redis.password, db=4)
    conn = await psycopg.AsyncConnection.connect(
        host="127.0.0.1",
        port=stack.postgres_port,
        user=stack.postgres.user,
        password=stack.postgres.password,
        dbname=DATABASE,
        autocommit=True,
    )
    await conn.execute("CREATE TABLE IF NOT EXISTS hop (event_id text PRIMARY KEY, body jsonb)")
    figures: dict[int, list[tuple[float, float]]] = {batch: [] for batch in BATCHES}
    try:
        for _ in range(REPEATS):  # alternating, so drift in the machine's load hits each alike
            for batch in BATCHES:
                figures[batch].append(await hop(redis, conn, batch))
    finally:
        await redis.flushdb()
        await redis.aclose()
        await conn.close()
    rows = []
    for batch, runs in figures.items():
        cpu = [run[0] for run in runs]
        wall = [run[1] for run in runs]
        what = "one transaction per event" if batch == 1 else f"one per read batch of {batch}"
        rows.append(
            {
                "name": f"durable hop CPU per event, {what}",
                "value": min(cpu),
                "unit": "ms",
                "note": f"median {statistics.median(cpu):.3f}; wall per event min "
                f"{min(wall):.3f}, median {statistics.median(wall):.3f} ms; this process + "
                f"redis-server + PostgreSQL backend, {EVENTS:,} events, {REPEATS} repeats",
            }
        )
    return rows


def run(stack: LocalStack) -> list[dict[str, Any]]:
    return asyncio.run(measure(stack))
