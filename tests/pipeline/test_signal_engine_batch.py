"""signal_engine takes the market data of one read in one transaction: the same signals,
stored and published in the same order, as one event at a time, the cooldown holding
inside a batch; a SIGKILL before the batch's commit, or after it and before its
acknowledgement, leaves each signal made once after the restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations
from cdb.core.events import MarketData, Signal, Stream
from cdb.signal_engine.strategy import signal_id_for
from tests.support import (
    FAST_BUS,
    ServiceProcess,
    as_user,
    conninfo,
    eventually_async,
    group_caught_up,
    market,
    query,
    scalar,
    waiting_to_insert,
)

pytestmark = pytest.mark.slow

T0 = int(time.time()) - 7200


@pytest.fixture
async def signals_env(service_env: dict[str, str], settings: ServiceSettings) -> dict[str, str]:
    """``service_env`` with the schema in place, so the market data is on the stream
    before signal_engine starts: it reads it all in one read."""
    await apply_migrations(settings)
    return service_env


def scenario(prefix: str) -> list[MarketData]:
    """Moves of three symbols: a signal, one inside its cooldown (suppressed), one after
    it; the same window again under another event id (its signal republished); one
    below the threshold; another symbol's signal."""
    a, b, c = (f"{prefix}{name}_USDT" for name in ("A", "B", "C"))
    first = market(a, 5.0, ts=T0)
    return [
        first,
        market(b, 1.0, ts=T0),  # below the threshold
        market(a, 6.0, ts=T0 + 600),  # inside the 900 s cooldown
        first.model_copy(update={"event_id": f"{prefix}-again"}),  # the same window
        market(c, 4.0, ts=T0 + 100),
        market(a, 7.0, ts=T0 + 1200),  # after the cooldown
        market(c, 9.0, ts=T0 + 300),  # inside c's cooldown
    ]


def expected(prefix: str) -> list[str]:
    moves = scenario(prefix)
    return [signal_id_for(moves[i], "long") for i in (0, 0, 4, 5)]


async def published(bus: Bus) -> list[Signal]:
    entries: Any = await bus.redis.xrange(Stream.SIGNALS.value)
    return [Signal.model_validate_json(fields[b"event"]) for _, fields in entries]


def shape(signal: Signal, prefix: str) -> tuple[Any, ...]:
    """A signal without its ids (they name the symbol)."""
    return (
        signal.symbol.removeprefix(prefix),
        signal.side,
        signal.confidence,
        signal.reason,
        signal.price,
        signal.pct_change,
        signal.timestamp,
    )


async def caught_up(bus: Bus) -> bool:
    return await group_caught_up(bus.redis, Stream.MARKET_DATA.value, "signal_engine")


def start(env: dict[str, str], tmp_path: Path) -> ServiceProcess:
    own = as_user({**env, **FAST_BUS, "CONSUMER_NAME": "se-0"}, "signal_engine")
    proc = ServiceProcess("cdb.signal_engine", own, tmp_path).start()
    proc.wait_healthy(60)
    return proc


async def test_a_read_makes_the_signals_one_event_at_a_time_makes(
    bus: Bus, signals_env: dict[str, str], tmp_path: Path
) -> None:
    for md in scenario("B"):  # on the stream before the service reads: one read
        await bus.publish(md)
    proc = start(signals_env, tmp_path)
    try:
        await eventually_async(lambda: caught_up(bus), "the read handled", timeout=30)
        for md in scenario("S"):
            await bus.publish(md)
            await eventually_async(lambda: caught_up(bus), "the event handled", timeout=30)
    finally:
        proc.__exit__()
    signals = await published(bus)
    batch = [s for s in signals if s.symbol.startswith("B")]
    singles = [s for s in signals if s.symbol.startswith("S")]
    assert [s.signal_id for s in batch] == expected("B")  # the cooldown held in the batch
    assert [s.signal_id for s in singles] == expected("S")
    assert [shape(s, "B") for s in batch] == [shape(s, "S") for s in singles]
    rows = "SELECT {} FROM signals WHERE symbol LIKE %s ORDER BY signal_ts, symbol"
    columns = "substr(symbol, 2), side, confidence, reason, price, pct_change, signal_ts"
    assert query(signals_env, rows.format(columns), ("B%",)) == query(
        signals_env, rows.format(columns), ("S%",)
    )
    distinct = "SELECT count(DISTINCT created_at) FROM signals WHERE symbol LIKE %s"
    assert scalar(signals_env, distinct, ("B%",)) == 1, "the read was not one transaction"
    assert scalar(signals_env, distinct, ("S%",)) == 3


async def assert_each_signal_once(bus: Bus, env: dict[str, str]) -> None:
    ids = expected("K")
    assert query(env, "SELECT signal_id FROM signals ORDER BY signal_ts, symbol") == [
        (i,) for i in dict.fromkeys(ids)
    ]
    assert {s.signal_id for s in await published(bus)} == set(ids)
    assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0


@pytest.mark.parametrize("when", ["before the commit", "after the commit, before the ack"])
async def test_killed_inside_a_batch_each_signal_is_made_once(
    bus: Bus, signals_env: dict[str, str], tmp_path: Path, when: str
) -> None:
    for md in scenario("K"):
        await bus.publish(md)
    blocker = psycopg.connect(conninfo(signals_env), connect_timeout=5)
    paused = False
    proc: ServiceProcess | None = None
    try:
        blocker.execute("LOCK TABLE signals IN EXCLUSIVE MODE")  # the inserts wait
        proc = start(signals_env, tmp_path)
        await eventually_async(
            lambda: waiting_to_insert(signals_env, "signals"),
            "the batch's transaction at its inserts",
        )
        if when == "before the commit":
            proc.kill()  # SIGKILL inside the batch's transaction
            blocker.rollback()
            await eventually_async(
                lambda: not waiting_to_insert(signals_env, "signals"), "the dead transaction gone"
            )
            assert scalar(signals_env, "SELECT count(*) FROM signals") == 0
        else:
            # Redis takes no write now: the signals' XADD and the XACK after the commit wait
            await bus.redis.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
            paused = True
            blocker.rollback()  # the batch commits
            await eventually_async(
                lambda: scalar(signals_env, "SELECT count(*) FROM signals") == 3,
                "the batch committed",
            )
            proc.kill()  # SIGKILL after the commit, before the XACK
            await bus.redis.execute_command("CLIENT", "UNPAUSE")
            paused = False
        assert await published(bus) == []
        assert not await caught_up(bus), "acknowledged before the kill"
        proc = start(signals_env, tmp_path)  # the same consumer: its entries come again
        await eventually_async(lambda: caught_up(bus), "the read handled again", timeout=30)
        await assert_each_signal_once(bus, signals_env)
    finally:
        if paused:
            await bus.redis.execute_command("CLIENT", "UNPAUSE")
        blocker.close()
        if proc is not None:
            proc.__exit__()
