"""Faults — the heart of the pipeline's promise: exactly once in effect.

A burst of 210 momentum moves (distinct symbols, all above the threshold) goes through
signal_engine → risk_manager → execution_service as real processes while something breaks:
each service SIGKILLed at random points (several seeds) and restarted, Redis killed and
restarted from its AOF, PostgreSQL stopped for 10 s. Afterwards every signal has exactly
one decision; every approved signal exactly one order, one entry fill and one position;
every rejection a reason; and risk_manager's book (equity, exposure, fees) reconciles with
execution_service's fills and positions.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from cdb.core.bus import Bus
from cdb.core.events import Stream
from tests.support import (
    REDIS_PASSWORD,
    Pipeline,
    RedisServer,
    eventually_async,
    market,
    query,
    scalar,
)

pytestmark = pytest.mark.slow

BURST = 210
# 0.2 % per position and a 40 % exposure cap: ~200 approvals, the rest rejected (exposure).
RISK = {"MAX_POSITION_PCT": "0.2", "MAX_EXPOSURE_PCT": "40", "PAPER_SLIPPAGE_BPS": "3"}

Fault = Callable[[Pipeline], Awaitable[None]]


async def publish_burst(bus: Bus, seed: int) -> list[str]:
    """210 movers in small batches, so faults land in the middle of the stream."""
    rng = random.Random(seed)
    now = int(time.time())
    symbols = [f"F{seed}X{i:03d}_USDT" for i in range(BURST)]
    for start in range(0, BURST, 15):
        for symbol in symbols[start : start + 15]:
            await bus.publish(
                market(symbol, rng.uniform(3.0, 12.0), price=rng.uniform(0.5, 500.0), ts=now)
            )
        await asyncio.sleep(0.1)
    return symbols


async def run_burst(bus: Bus, pipeline: Pipeline, seed: int, fault: Fault) -> None:
    publisher = asyncio.create_task(publish_burst(bus, seed))
    await fault(pipeline)
    await publisher


async def assert_exactly_once(env: dict[str, str], redis: Redis, pipeline: Pipeline) -> None:
    def settled() -> bool:
        return bool(
            scalar(env, "SELECT count(*) FROM risk_decisions") == BURST
            and scalar(env, "SELECT count(*) FROM risk_positions WHERE status <> 'open'") == 0
            and scalar(env, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
            and scalar(env, "SELECT count(*) FROM risk_positions")
            == scalar(env, "SELECT count(*) FROM fills")
        )

    try:
        await eventually_async(
            settled, timeout=120, what="every signal decided and every fill booked"
        )
    except AssertionError:
        print(pipeline.logs())
        raise

    # One signal per move, one decision per signal.
    assert scalar(env, "SELECT count(*) FROM signals") == BURST
    decisions = dict(query(env, "SELECT signal_id, decision FROM risk_decisions"))
    assert set(decisions) == {r[0] for r in query(env, "SELECT signal_id FROM signals")}
    approved = {
        r[0]: r[1]
        for r in query(
            env, "SELECT order_id, signal_id FROM risk_decisions WHERE decision = 'approved'"
        )
    }
    rejected = BURST - len(approved)
    assert len(approved) > 150 and rejected > 0  # both paths exercised
    assert scalar(env, "SELECT count(*) FROM risk_events WHERE kind = 'rejection'") == rejected
    assert scalar(env, "SELECT count(*) FROM risk_events WHERE reason = ''") == 0

    # Every approved signal: exactly one order, one entry fill, one position. Nothing else.
    orders = query(env, "SELECT order_id, signal_id, status FROM orders")
    assert {o[0]: o[1] for o in orders} == approved
    assert {o[2] for o in orders} == {"filled"}
    fills = query(env, "SELECT order_id, count(*) FROM fills GROUP BY order_id")
    assert {f[0] for f in fills} == set(approved) and {f[1] for f in fills} == {1}
    assert scalar(env, "SELECT count(*) FROM positions WHERE status = 'open'") == len(approved)

    # Every approved order reached the bus and its fill came back (duplicates on the bus
    # are allowed: they carry the same event id and are skipped).
    published = {_order_id(e) for _, e in await redis.xrange(Stream.ORDERS.value)}
    assert published == set(approved)
    results = {_order_id(e) for _, e in await redis.xrange(Stream.ORDER_RESULTS.value)}
    assert results == set(approved)
    assert await redis.xlen(Stream.DEAD_LETTER.value) == 0

    # The books reconcile: fees once per fill, exposure = open notional, one ledger row each.
    fees_exec = scalar(env, "SELECT sum(fee) FROM fills")
    equity_risk = 10_000.0 + scalar(env, "SELECT sum(realized_pnl - fees) FROM risk_positions")
    assert equity_risk == pytest.approx(10_000.0 - fees_exec, rel=1e-12)
    per_order = query(
        env,
        "SELECT r.order_id FROM risk_positions r JOIN fills f ON f.order_id = r.order_id"
        " JOIN positions p ON p.order_id = r.order_id"
        " WHERE abs(r.fees - f.fee) > 1e-12 OR abs(r.notional - p.entry_price * p.quantity)"
        " > 1e-9 * r.notional",
    )
    assert per_order == []
    assert scalar(env, "SELECT count(*) FROM equity") == len(approved)
    book = pipeline.procs["risk_manager"].status()["book"]
    assert book["equity_usdt"] == pytest.approx(10_000.0 - fees_exec)
    assert book["open_positions"] == len(approved)
    exposure = scalar(env, "SELECT sum(entry_price * quantity) FROM positions")
    assert book["exposure_usdt"] == pytest.approx(exposure)
    assert book["exposure_usdt"] <= 0.40 * book["equity_usdt"] * (1 + 1e-9)


def decided(env: dict[str, str]) -> int:
    return int(scalar(env, "SELECT count(*) FROM risk_decisions") or 0)


def _order_id(fields: dict[bytes, bytes]) -> str:
    import json

    return str(json.loads(fields[b"event"])["order_id"])


PROGRESS = {
    "signal_engine": "SELECT count(*) FROM signals",
    "risk_manager": "SELECT count(*) FROM risk_decisions",
    "execution_service": "SELECT count(*) FROM orders",
}


def killer(name: str, seed: int, progress: list[int], kills: int = 2) -> Fault:
    """SIGKILL ``name`` at random points and restart it; ``progress`` records how much of
    the burst that service had handled at each kill."""

    async def fault(pipeline: Pipeline) -> None:
        rng = random.Random(seed * 7919 + len(name))
        env = pipeline.env
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.05, 0.9))
            pipeline.kill(name)
            progress.append(int(scalar(env, PROGRESS[name]) or 0))
            await asyncio.to_thread(pipeline.start, name)

    return fault


@pytest.mark.parametrize("seed", [11, 23, 37])
@pytest.mark.parametrize("name", ["signal_engine", "risk_manager", "execution_service"])
async def test_sigkill_during_a_burst_loses_and_doubles_nothing(
    name: str, seed: int, bus: Bus, service_env: dict[str, str], tmp_path: Path, redis_proc: Any
) -> None:
    pipeline = Pipeline(service_env, tmp_path, **RISK).start()
    redis = Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)
    try:
        progress: list[int] = []
        await run_burst(bus, pipeline, seed, killer(name, seed, progress))
        await assert_exactly_once(service_env, redis, pipeline)
        assert any(0 < handled < BURST for handled in progress), progress  # mid-stream
    finally:
        pipeline.stop()
        await redis.aclose()


async def test_all_three_killed_in_turn_at_random_points(
    bus: Bus, service_env: dict[str, str], tmp_path: Path, redis_proc: Any
) -> None:
    """Chaos: six SIGKILLs of randomly chosen services; one may die while another restarts."""
    pipeline = Pipeline(service_env, tmp_path, **RISK).start()
    redis = Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)
    rng = random.Random(99)

    progress: list[int] = []

    async def fault(pipeline: Pipeline) -> None:
        restarts: dict[str, asyncio.Task[None]] = {}
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            name = rng.choice(list(PROGRESS))
            if name in restarts:
                await restarts[name]  # its previous restart first
            pipeline.kill(name)
            progress.append(int(scalar(service_env, PROGRESS[name]) or 0))
            restarts[name] = asyncio.create_task(asyncio.to_thread(pipeline.start, name))
        await asyncio.gather(*restarts.values())

    try:
        await run_burst(bus, pipeline, 99, fault)
        await assert_exactly_once(service_env, redis, pipeline)
        assert any(0 < handled < BURST for handled in progress), progress  # mid-stream
    finally:
        pipeline.stop()
        await redis.aclose()


async def test_redis_killed_and_restarted_from_its_aof_mid_stream(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", REDIS_PASSWORD).start()
    env = {**service_env, **server.env()}
    pipeline = Pipeline(env, tmp_path, **RISK).start()
    redis = Redis(port=server.port, password=REDIS_PASSWORD)
    bus = Bus(Redis(port=server.port, password=REDIS_PASSWORD))

    at_fault: list[int] = []

    async def fault(_: Pipeline) -> None:
        await eventually_async(lambda: decided(env) > 0, what="a first decision, then the fault")
        at_fault.append(decided(env))
        server.kill()  # SIGKILL: only what the AOF holds survives
        await asyncio.sleep(1.5)
        server.start()

    try:
        await run_burst(bus, pipeline, 5, fault)
        await assert_exactly_once(env, redis, pipeline)
        assert 0 < at_fault[0] < BURST  # the outage landed mid-stream
    finally:
        pipeline.stop()
        await redis.aclose()
        await bus.close()
        server.stop()


async def test_postgres_stopped_for_ten_seconds_mid_stream(
    bus: Bus, service_env: dict[str, str], tmp_path: Path, redis_proc: Any, postgresql_proc: Any
) -> None:
    pipeline = Pipeline(service_env, tmp_path, **RISK).start()
    redis = Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)

    def outage() -> None:
        postgresql_proc.stop()
        time.sleep(10)
        postgresql_proc.start()

    at_fault: list[int] = []

    async def fault(_: Pipeline) -> None:
        await eventually_async(
            lambda: decided(service_env) > 0, what="the first decision before the fault"
        )
        at_fault.append(decided(service_env))
        await asyncio.to_thread(outage)

    try:
        await run_burst(bus, pipeline, 7, fault)
        await assert_exactly_once(service_env, redis, pipeline)
        assert 0 < at_fault[0] < BURST  # the outage landed mid-stream
    finally:
        pipeline.stop()
        await redis.aclose()
