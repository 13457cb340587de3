"""risk_manager takes the signals of one read in one transaction: the same decisions,
reservations and published orders (in the same order) as one signal at a time, limits
reached by the batch's own approvals included; an entry that does not parse is
dead-lettered alone; a hold for approval sends the read one signal at a time; a SIGKILL
before the batch's commit, or after it and before its acknowledgement, leaves every signal
decided once and every approved order published after the restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations
from cdb.core.events import OrderResult, Signal, Stream
from tests.support import Pipeline, conninfo, eventually_async, query, scalar, scrape

pytestmark = pytest.mark.slow

# a position is 10 % of equity, exposure stops at 30 %: the third approval of a read
# reaches the cap, so the signals after it are rejected by the batch's own reservations
LIMITS = {"MAX_POSITION_PCT": "10", "MAX_EXPOSURE_PCT": "30"}
# A again while its position is reserved; D and E over the exposure cap
SYMBOLS = ["A_USDT", "B_USDT", "A_USDT", "C_USDT", "D_USDT", "E_USDT"]
N = len(SYMBOLS)


@pytest.fixture
async def risk_env(service_env: dict[str, str], settings: ServiceSettings) -> dict[str, str]:
    """``service_env`` with the schema in place, so the signals are on the stream before
    risk_manager starts: it reads them all in one read."""
    await apply_migrations(settings)
    return service_env


def a_signal(prefix: str, index: int, symbol: str) -> Signal:
    sid = f"{prefix}-{index}"
    return Signal(
        event_id=sid,
        signal_id=sid,
        symbol=symbol,
        side="long" if index % 2 else "short",
        confidence=0.5,
        reason="scripted",
        price=100.0 + index,
        pct_change=5.0,
        timestamp=time.time(),
    )


def signals(prefix: str, symbols: list[str] = SYMBOLS) -> list[Signal]:
    return [a_signal(prefix, i, symbol) for i, symbol in enumerate(symbols)]


def decided(env: dict[str, str], prefix: str) -> int:
    return int(
        scalar(env, "SELECT count(*) FROM risk_decisions WHERE signal_id LIKE %s", (f"{prefix}-%",))
    )


def book(env: dict[str, str], prefix: str) -> list[tuple[Any, ...]]:
    """Each signal's decision, reason, reservation and risk event, without ids and clocks."""
    return query(
        env,
        "SELECT d.decision, d.reason, p.symbol, p.side, p.quantity, p.notional,"
        " p.entry_price, p.stop_loss, e.kind, e.reason"
        " FROM risk_decisions d LEFT JOIN risk_positions p USING (signal_id)"
        " LEFT JOIN risk_events e ON e.signal_id = d.signal_id"
        " WHERE d.signal_id LIKE %s ORDER BY d.signal_id",
        (f"{prefix}-%",),
    )


def transactions(env: dict[str, str], prefix: str) -> int:
    """How many transactions decided these signals (``decided_at`` is the transaction's now())."""
    return int(
        scalar(
            env,
            "SELECT count(DISTINCT decided_at) FROM risk_decisions WHERE signal_id LIKE %s",
            (f"{prefix}-%",),
        )
    )


async def orders_on_bus(bus: Bus, prefix: str) -> list[dict[str, Any]]:
    """The orders published for these signals, in stream order."""
    entries: Any = await bus.redis.xrange(Stream.ORDERS.value)
    orders = [json.loads(fields[b"event"]) for _, fields in entries]
    return [o for o in orders if o["signal_id"].startswith(f"{prefix}-")]


def without_clock(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k not in ("event_id", "order_id", "signal_id")}


def without_ids(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in without_clock(order).items() if k != "timestamp"}


async def pending_signals(bus: Bus) -> int:
    info: Any = await bus.redis.xpending(Stream.SIGNALS.value, "risk_manager")
    return int(info["pending"])


async def acknowledged(bus: Bus) -> bool:
    return await pending_signals(bus) == 0


async def release(bus: Bus, env: dict[str, str], prefix: str) -> None:
    """The venue rejected every approved order of ``prefix``: their reservations end."""
    for order in await orders_on_bus(bus, prefix):
        await bus.publish(
            OrderResult(
                order_id=order["order_id"],
                symbol=order["symbol"],
                side=order["side"],
                status="rejected",
                timestamp=time.time(),
            )
        )
    await eventually_async(
        lambda: scalar(env, "SELECT count(*) FROM risk_positions WHERE status <> 'released'") == 0,
        "the reservations released",
    )


async def test_a_read_decides_what_one_signal_at_a_time_decides(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    batch = signals("batch")
    for sig in batch:  # on the stream before the service reads: one read
        await bus.publish(sig)
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS).start("risk_manager")
    try:
        await eventually_async(
            lambda: decided(risk_env, "batch") == N, "the read's signals decided", timeout=30
        )
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        batch_orders = await orders_on_bus(bus, "batch")
        await release(bus, risk_env, "batch")  # the same empty book for the singles
        for count, sig in enumerate(signals("single"), start=1):
            await bus.publish(sig)
            await eventually_async(
                lambda c=count: decided(risk_env, "single") == c, "the signal decided"
            )
        assert transactions(risk_env, "batch") == 1, "the read was not one transaction"
        assert transactions(risk_env, "single") == N
        decisions = [row[:2] for row in book(risk_env, "batch")]
        assert decisions == [
            ("approved", ""),
            ("approved", ""),
            ("rejected", "position_open"),
            ("approved", ""),
            ("rejected", "exposure"),
            ("rejected", "exposure"),
        ]
        assert book(risk_env, "batch") == book(risk_env, "single")
        single_orders = await orders_on_bus(bus, "single")
        assert [o["signal_id"] for o in batch_orders] == ["batch-0", "batch-1", "batch-3"]
        assert [without_ids(o) for o in batch_orders] == [without_ids(o) for o in single_orders]
        assert len({o["timestamp"] for o in batch_orders}) == 1
        url = pipeline.procs["risk_manager"].url
        assert scrape(url, "risk_orders_approved_total") == 6
        assert scrape(url, "risk_signals_rejected_total", reason="exposure") == 4
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0
    finally:
        pipeline.stop()


async def test_an_entry_that_does_not_parse_is_dead_lettered_alone(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    batch = signals("mixed")
    for index, sig in enumerate(batch):
        if index == 2:
            await bus.redis.xadd(Stream.SIGNALS.value, {"event": b'{"signal_id": "broken"'})
        await bus.publish(sig)
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS).start("risk_manager")
    try:
        await eventually_async(lambda: decided(risk_env, "mixed") == N, "the signals decided")
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        assert transactions(risk_env, "mixed") == 1, "the valid signals were not one batch"
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 1
        assert [o["signal_id"] for o in await orders_on_bus(bus, "mixed")] == [
            "mixed-0",
            "mixed-1",
            "mixed-3",
        ]
        assert scalar(risk_env, "SELECT count(*) FROM risk_decisions") == N
        url = pipeline.procs["risk_manager"].url
        assert scrape(url, "risk_orders_approved_total") == 3
    finally:
        pipeline.stop()


async def test_a_read_held_for_approval_is_decided_one_signal_at_a_time(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    held = signals("held", ["A_USDT", "B_USDT", "C_USDT"])
    for sig in held:
        await bus.publish(sig)
    manual = {"RISK_APPROVAL": "manual", "RISK_APPROVAL_TIMEOUT_S": "600"}
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS, **manual).start("risk_manager")
    try:
        await eventually_async(lambda: decided(risk_env, "held") == 3, "the signals held")
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        assert query(risk_env, "SELECT DISTINCT decision FROM risk_decisions") == [("held",)]
        assert scalar(risk_env, "SELECT count(*) FROM approvals WHERE state = 'pending'") == 3
        assert transactions(risk_env, "held") == 3  # the one-at-a-time road
        assert await orders_on_bus(bus, "held") == [], "a held order was published"
        requests: Any = await bus.redis.xrange(Stream.APPROVALS.value)
        assert len(requests) == 3
        url = pipeline.procs["risk_manager"].url
        assert scrape(url, "risk_approvals_total", outcome="held") == 3
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0
    finally:
        pipeline.stop()


def waiting_on_decisions(env: dict[str, str]) -> bool:
    """risk_manager's transaction waits for our lock on ``risk_decisions``."""
    rows = query(
        env,
        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE '%%INSERT INTO risk_decisions%%'",
    )
    return bool(rows)


async def assert_each_decided_once(bus: Bus, env: dict[str, str], prefix: str) -> None:
    assert decided(env, prefix) == N
    assert scalar(env, "SELECT count(*) FROM risk_positions") == 3
    approved = [
        str(r[0])
        for r in query(
            env,
            "SELECT signal_id FROM risk_decisions WHERE decision = 'approved' ORDER BY signal_id",
        )
    ]
    assert approved == [f"{prefix}-0", f"{prefix}-1", f"{prefix}-3"]
    # a restart may publish an order again: the same event id, which execution skips
    orders = await orders_on_bus(bus, prefix)
    assert {o["signal_id"] for o in orders} == set(approved)
    assert len({o["event_id"] for o in orders}) == len(approved)
    assert await pending_signals(bus) == 0
    assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0


async def test_killed_before_the_batch_commits_every_signal_is_decided_once(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    for sig in signals("kill-before"):
        await bus.publish(sig)
    blocker = psycopg.connect(conninfo(risk_env), connect_timeout=5)
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS)
    try:
        blocker.execute("LOCK TABLE risk_decisions IN EXCLUSIVE MODE")  # until rollback
        pipeline.start("risk_manager")
        await eventually_async(
            lambda: waiting_on_decisions(risk_env), "the batch's transaction at its decisions"
        )
        pipeline.kill("risk_manager")  # SIGKILL inside the batch's transaction
        blocker.rollback()
        await eventually_async(
            lambda: not waiting_on_decisions(risk_env), "the dead transaction rolled back"
        )
        assert decided(risk_env, "kill-before") == 0, "half a batch stayed"
        assert scalar(risk_env, "SELECT count(*) FROM risk_positions") == 0
        assert await orders_on_bus(bus, "kill-before") == []
        assert await pending_signals(bus) == N

        pipeline.start("risk_manager")  # the same consumer: its entries come again
        await eventually_async(
            lambda: decided(risk_env, "kill-before") == N, "decided again", timeout=30
        )
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        await assert_each_decided_once(bus, risk_env, "kill-before")
    finally:
        blocker.close()
        pipeline.stop()


async def test_killed_after_the_batch_committed_before_its_ack_every_signal_is_decided_once(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    for sig in signals("kill-after"):
        await bus.publish(sig)
    blocker = psycopg.connect(conninfo(risk_env), connect_timeout=5)
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS)
    paused = False
    try:
        blocker.execute("LOCK TABLE risk_decisions IN EXCLUSIVE MODE")
        pipeline.start("risk_manager")
        await eventually_async(
            lambda: waiting_on_decisions(risk_env), "the batch's transaction at its decisions"
        )
        # Redis takes no write now: the orders' XADD and the XACK after the commit wait
        await bus.redis.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        paused = True
        blocker.rollback()  # the batch commits
        await eventually_async(lambda: decided(risk_env, "kill-after") == N, "the batch committed")
        pipeline.kill("risk_manager")  # SIGKILL after the commit, before the XACK
        await bus.redis.execute_command("CLIENT", "UNPAUSE")
        paused = False
        assert await pending_signals(bus) == N, "acknowledged before the kill"
        assert await orders_on_bus(bus, "kill-after") == [], "published before the kill"

        pipeline.start("risk_manager")  # redelivered: each signal finds its decision
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        await assert_each_decided_once(bus, risk_env, "kill-after")
    finally:
        if paused:
            await bus.redis.execute_command("CLIENT", "UNPAUSE")
        blocker.close()
        pipeline.stop()
